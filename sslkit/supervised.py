"""Supervised training: the reference every self-supervised method is compared with.

``Supervised`` is a method like the self-supervised ones (``backbone``, ``training_step``): cross-entropy
on a linear head over the backbone, with flips and small translations (``sslkit.augment.flip_and_translate``),
so ``sslkit.train.train`` trains it with the same loop and the same budget. It is the upper reference
line: the same backbone trained with all the labels.

>>> import sslkit
>>> cfg = sslkit.make_config("smoke", num_epochs=1, batch_size=32, time_budget_s=None)
>>> data = sslkit.load_dataset("shapes", "train", n=64, seed=0)
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> history = fit_supervised(backbone, data, cfg, progress=False)
>>> history.steps, len(history.losses), history.stopped_early
(2, 2, False)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .augment import flip_and_translate
from .config import Config
from .data import ImageData, to_float
from .train import History, train


class Supervised(nn.Module):
    """Cross-entropy on a linear head over the backbone, with flips and small translations.

    The upper reference line for every self-supervised method: the same backbone trained with
    all the labels.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, feature_dim: int | None = None, max_shift: int = 4,
                 rotate90: bool = False):
        super().__init__()
        self.backbone = backbone
        dim = feature_dim or backbone.feature_dim
        self.head = nn.Linear(dim, num_classes)
        self.max_shift, self.rotate90 = max_shift, rotate90

    def forward(self, x):
        return self.head(self.backbone(x))  # (B, num_classes)

    def training_step(self, images, labels):
        if (labels < 0).any():
            raise ValueError("supervised training needs labels, but this batch has unlabeled images (label -1); "
                             "train on a labeled split such as load_dataset(..., 'train', ...)")
        x = flip_and_translate(images, self.max_shift)
        if self.rotate90:  # only where a quarter turn keeps the class (e.g. shapes, not CIFAR-10)
            k = int(torch.randint(4, ()))
            x = torch.rot90(x, k, dims=(2, 3))
        return F.cross_entropy(self(to_float(x)), labels)


def fit_supervised(backbone: nn.Module, data: ImageData, cfg: Config, monitor=None, **kwargs) -> History:
    """Train ``backbone`` with a linear head on the labels of ``data`` (in place); returns the ``History``.

    ``kwargs`` go to ``sslkit.train.train`` (``live_plot``, ``progress``, ``callbacks``).
    """
    method = Supervised(backbone, data.num_classes)
    return train(method, data, cfg, monitor=monitor, **kwargs)

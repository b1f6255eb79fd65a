"""Evaluation: did self-supervision learn anything useful?

The field's standard answers, the same way in every notebook:

- ``extract_features``: run a frozen backbone over a dataset (eval mode, no grad, batched).
- ``knn_accuracy``: weighted kNN on L2-normalised features through lightly's ``knn_predict``
  (Wu et al. 2018; k=200 and temperature 0.1 as in lightly's benchmarks).

>>> import torch
>>> bank = torch.eye(4).repeat(5, 1)              # 20 features, 4 directions
>>> labels = torch.arange(4).repeat(5)            # the direction is the class
>>> knn_accuracy(bank, labels, torch.eye(4), torch.arange(4), k=5)
1.0
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageData, to_float


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def extract_features(backbone: nn.Module, data: ImageData | torch.Tensor, batch_size: int = 512,
                     name: str | None = None) -> torch.Tensor:
    """Features (N, D) of a frozen backbone, on the CPU, in the order of ``data``.

    Runs in eval mode without gradients, in batches, on the backbone's device; the backbone's
    train/eval mode is restored afterwards. ``data`` is an ``ImageData`` or a uint8 tensor
    (N, 3, H, W). Raises ``FloatingPointError`` naming the model and the first bad batch when
    a feature is NaN or Inf.
    """
    images = data.images if isinstance(data, ImageData) else data
    device, was_training = _device_of(backbone), backbone.training
    backbone.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = to_float(images[start:start + batch_size].to(device))
            f = backbone(x).flatten(1).float()
            if not torch.isfinite(f).all():
                model_name = name or type(backbone).__name__
                raise FloatingPointError(
                    f"{model_name} produced NaN or Inf features in batch {start // batch_size} "
                    f"(images {start}..{start + len(x) - 1}); the weights have diverged: retrain with a "
                    f"lower learning rate or in fp32")
            out.append(f.cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 200, temperature: float = 0.1,
                 batch_size: int = 1024) -> float:
    """Top-1 accuracy of a weighted kNN classifier (lightly's ``knn_predict``).

    Features are L2-normalised; each test sample's k most similar training samples vote for
    their class with weight exp(similarity / temperature).

    Args:
        train_features: (N, D) the feature bank. train_labels: (N,) class indices.
        test_features: (M, D) queries. test_labels: (M,) their classes.
        k: neighbours; clamped (with a warning) to N when the bank is smaller.
        temperature: lower values trust the nearest neighbours more.
    """
    from lightly.utils.benchmarking import knn_predict

    if k > len(train_features):
        warnings.warn(f"k={k} is larger than the feature bank ({len(train_features)} samples); "
                      f"using k={len(train_features)}", stacklevel=2)
        k = len(train_features)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    bank = F.normalize(train_features.float(), dim=1).T.contiguous()  # (D, N)
    labels = train_labels.long()
    correct = 0
    for start in range(0, len(test_features), batch_size):
        q = F.normalize(test_features[start:start + batch_size].float(), dim=1)
        pred = knn_predict(q, bank, labels, num_classes=num_classes, knn_k=k, knn_t=temperature)[:, 0]
        correct += (pred == test_labels[start:start + batch_size]).sum().item()
    return correct / len(test_features)

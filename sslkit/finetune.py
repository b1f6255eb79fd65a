"""Fine-tuning: how far a few labels go on top of self-supervised features.

Three ways to turn a pre-trained backbone into a classifier, from cheapest to most expensive
(the evaluation protocols of SimCLR, Chen et al. 2020, sections 4 and 6):

- **kNN** on frozen features (``sslkit.evaluate.knn_accuracy``): no training at all;
- **linear probe** on frozen features (``fit_linear``, ``class_scores``, ``linear_head``; defined
  in ``sslkit.probe`` and importable from here): a logistic regression on the features, with class
  probabilities, as a torch layer;
- **fine-tuning** (``FineTune``, ``fine_tune``): the whole network and a new linear head trained
  on the labels, the backbone at a smaller learning rate than the head (``FineTune.param_groups``),
  so a few labels adjust the pre-trained features instead of overwriting them; for a ViT,
  ``layer_decay`` slows it block by block as MAE fine-tunes. The same recipe on a randomly
  initialised backbone is the supervised-from-scratch baseline.

Then semi-supervised pseudo-labelling on frozen features (``pseudo_label``; Lee 2013). The labeled
subsets of a label-efficiency curve, the classification metrics and the curve itself are in
``sslkit.labels``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentParams, augment
from .config import Config
from .data import ImageData
from .evaluate import extract_features
from .methods.mae import NO_DECAY_NAMES, decay_groups
from .models import TinyViT
from .probe import LinearClassifier, class_scores, fit_linear, linear_head  # the probe, as notebook 07 imports it
from .supervised import Supervised
from .train import History, train

# ----------------------------------------------------------------------------------------------
# fine-tuning: the whole network, the backbone at a lower learning rate than the head


class FineTune(Supervised):
    """A backbone and a linear head trained together on labels (cross-entropy on augmented images).

    The head is new and the backbone pre-trained; with one learning rate for both, the head's
    large early gradients would wreck the features before the head has learned anything. So the
    backbone trains at ``backbone_lr_scale`` times the head's learning rate: ``param_groups``
    gives the optimizer parameter groups, and the training loop multiplies each group's
    scheduled lr by its ``lr_scale``. Better still, start the head from a linear probe
    (``init_head``; "LP-FT", Kumar et al. 2022): then fine-tuning begins from a working
    classifier and only has to improve the features, not survive a random head.

    For a ViT (``sslkit.models.TinyViT``), ``layer_decay`` gives MAE's fine-tuning groups (He et
    al. 2022, appendix A.2): layer-wise learning-rate decay (Clark et al. 2020), block i of L at
    ``backbone_lr_scale * layer_decay ** (L + 1 - depth)``, so the layers nearest the input,
    whose general features transfer best, move least; and weight decay on the weight matrices
    only (``sslkit.methods.mae.decays``: not on biases, LayerNorms, tokens). ``layer_decay=1``:
    those groups without the decay (a ViT trained from scratch).

    Args:
        backbone: (B, 3, H, W) normalised images -> (B, D) features; trained in place.
        num_classes: outputs of the head.
        feature_dim: D (None: ``backbone.feature_dim``).
        backbone_lr_scale: the backbone's lr as a fraction of the head's (1.0: one lr for all,
            the from-scratch recipe; 0.0: a frozen backbone, a linear probe trained by SGD).
        layer_decay: None: one group for the backbone, one for the head, weight decay on both;
            a number in (0, 1]: MAE's groups above (a ``TinyViT`` backbone only).
        augment: the random views to train on (``AugmentParams``: crops, colour jitter, ...);
            None: horizontal flips and shifts of up to ``max_shift`` pixels only.
        max_shift: shifts in pixels when ``augment`` is None.

    >>> import sslkit
    >>> backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
    >>> model = FineTune(backbone, 10, backbone_lr_scale=0.1)
    >>> [g["lr_scale"] for g in model.param_groups()]
    [0.1, 1.0]
    >>> model(torch.zeros(2, 3, 32, 32)).shape  # logits (B, num_classes)
    torch.Size([2, 10])
    >>> vit, dim = sslkit.make_backbone("vit_tiny", hidden_dim=32, num_layers=2, num_heads=2)
    >>> model = FineTune(vit, 10, backbone_lr_scale=0.5, layer_decay=0.5)
    >>> sorted({g["lr_scale"] for g in model.param_groups()})   # embedding, block 0, block 1, final norm, head
    [0.0625, 0.125, 0.25, 0.5, 1.0]
    """

    def __init__(self, backbone: nn.Module, num_classes: int, feature_dim: int | None = None,
                 backbone_lr_scale: float = 0.1, layer_decay: float | None = None,
                 augment: AugmentParams | None = None, max_shift: int = 4):
        super().__init__(backbone, num_classes, feature_dim, max_shift)
        if backbone_lr_scale < 0:
            raise ValueError(f"backbone_lr_scale={backbone_lr_scale} must be >= 0 (a fraction of the head's lr, "
                             f"e.g. 0.1)")
        if layer_decay is not None:
            if not 0 < layer_decay <= 1:
                raise ValueError(f"layer_decay={layer_decay} must be in (0, 1] (1: every block at the backbone's "
                                 f"rate; MAE uses 0.75), or None for one backbone group")
            if not isinstance(backbone, TinyViT):
                raise ValueError(f"layer_decay slows a ViT block by block, but the backbone is a "
                                 f"{type(backbone).__name__}; use make_backbone('vit_tiny'), or layer_decay=None")
        self.backbone_lr_scale, self.layer_decay, self.augment = backbone_lr_scale, layer_decay, augment

    def param_groups(self) -> list[dict]:
        """Torch parameter groups, each with its ``lr_scale`` (read by the training loop's optimizer).

        ``layer_decay`` None: the backbone (at ``backbone_lr_scale``), then the head (at 1). Else
        the head's groups, then each depth's of the ViT (see the class docstring).
        """
        if self.layer_decay is None:
            return [{"params": list(self.backbone.parameters()), "lr_scale": self.backbone_lr_scale},
                    {"params": list(self.head.parameters()), "lr_scale": 1.0}]
        groups = decay_groups(self.head)  # the new head: the full learning rate
        top = len(self.backbone.vit.encoder.layers) + 1  # the final LayerNorm's depth
        by_depth: dict[int, list] = {}
        for name, p in self.backbone.named_parameters():
            by_depth.setdefault(vit_layer_id(name, top - 1), []).append((name, p))
        for depth, named in sorted(by_depth.items()):
            groups += decay_groups(named, self.backbone_lr_scale * self.layer_decay ** (top - depth))
        return groups

    def training_step(self, images, labels):
        if self.augment is None:
            return super().training_step(images, labels)
        if (labels < 0).any():
            raise ValueError("fine-tuning needs labels, but this batch has unlabeled images (label -1)")
        return F.cross_entropy(self(augment(images, self.augment)), labels)  # views: (B, 3, S, S) floats

    def init_head(self, classifier) -> "FineTune":
        """Start the head from a ``fit_linear`` classifier (a linear probe on this backbone's features)."""
        linear_head(classifier, self.head)
        return self


def vit_layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter of a ``TinyViT`` (names relative to it): 0 for the patch embedding and the
    tokens, i + 1 for block i, ``num_layers + 1`` for the final LayerNorm (and anything after it).

    >>> vit_layer_id("encoder.vit.conv_proj.weight", 4), vit_layer_id("encoder.vit.encoder.layers.encoder_layer_2.ln_1.bias", 4)
    (0, 3)
    """
    match = re.search(r"encoder_layer_(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    if name.endswith(NO_DECAY_NAMES) or ".conv_proj." in name:
        return 0
    return num_layers + 1


def steps_config(cfg: Config, num_images: int, steps: int) -> Config:
    """A copy of ``cfg`` whose epochs give about ``steps`` optimizer steps on ``num_images`` images.

    A label-efficiency curve trains on 10 to 50,000 images: a fixed number of *epochs* would give
    the smallest sets a handful of steps and the largest hours, so each run gets a number of
    *steps* instead (batch ``min(cfg.batch_size, num_images)``, warm-up over the first 10%).

    >>> import sslkit
    >>> c = steps_config(sslkit.make_config("smoke", batch_size=64), num_images=100, steps=30)
    >>> c.num_epochs, c.batch_size  # 1 step per epoch of 100 images at batch 64 (the rest is dropped)
    (30, 64)
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: give at least one optimizer step")
    batch_size = min(cfg.batch_size, num_images)
    per_epoch = num_images // batch_size
    num_epochs = math.ceil(steps / per_epoch)
    return dataclasses.replace(cfg, num_epochs=num_epochs, warmup_epochs=0.1 * num_epochs, extra=dict(cfg.extra))


def fine_tune(backbone: nn.Module, labeled: ImageData, cfg: Config, steps: int = 300,
              backbone_lr_scale: float = 0.1, head_init: str = "linear", augment: AugmentParams | None = None,
              copy_backbone: bool = True, layer_decay: float | None = None, **kwargs) -> tuple[FineTune, History]:
    """Fine-tune ``backbone`` with a new linear head on ``labeled`` for about ``steps`` steps.

    Uses ``cfg``'s lr (the head's; the backbone gets ``backbone_lr_scale`` of it), weight decay,
    batch size (capped at the number of images), device and seed. ``cfg.time_budget_s`` is a cap
    per run: the schedule follows the steps, so the same seed gives the same model on any machine
    fast enough to finish within it.

    Args:
        backbone: pre-trained (or freshly initialised, for the from-scratch baseline).
        labeled: the labeled training images.
        head_init: "linear": start the head from a linear probe on the backbone's frozen features
            (LP-FT); "random": from random weights (the usual from-scratch start).
        augment: the views to train on (see ``FineTune``); None: flips and shifts.
        copy_backbone: train a copy, leaving ``backbone`` as it was (so one pre-trained backbone
            serves every run of a curve); False trains it in place.
        layer_decay: a ViT's layer-wise lr decay and MAE's weight-decay groups (see ``FineTune``).
        kwargs: go to ``sslkit.train.train`` (``progress``, ``monitor``, ``live_plot``).
    Returns ``(model, history)``; ``model(x)`` gives logits (B, C), ``sslkit.evaluate.predict(model, data)``
    all of them.
    """
    if not len(labeled):
        raise ValueError(f"the labeled set is empty: {labeled!r} has no images; fine-tuning needs at least one "
                         f"labeled image, e.g. data.per_class(10) of a labeled split ('train')")
    if (labeled.labels < 0).any():
        raise ValueError(f"fine-tuning needs labels but {labeled!r} has unlabeled images (label -1); use a "
                         f"labeled split ('train'), e.g. data.per_class(10)")
    if head_init not in ("linear", "random"):
        raise ValueError(f"unknown head_init {head_init!r}; choose 'linear' (from a linear probe) or 'random'")
    kwargs.setdefault("progress", False)
    torch.manual_seed(cfg.seed)  # the head's random init
    net = copy.deepcopy(backbone) if copy_backbone else backbone
    model = FineTune(net, labeled.num_classes, backbone_lr_scale=backbone_lr_scale, layer_decay=layer_decay,
                     augment=augment)
    if head_init == "linear":
        model.init_head(fit_linear(extract_features(net, labeled), labeled.labels, num_classes=labeled.num_classes))
    planned = dataclasses.replace(steps_config(cfg, len(labeled), steps), time_budget_s=None)
    history = train(model, labeled, planned, time_limit_s=cfg.time_budget_s, **kwargs)
    return model, history


# ----------------------------------------------------------------------------------------------
# frozen features: pseudo-labelling on top of the linear probe (``sslkit.probe``)


@dataclass
class PseudoLabels:
    """What ``pseudo_label`` did: the final classifier and the pool images it labelled, per round."""

    classifier: LinearClassifier  # the fitted classifier after the last round (``class_scores`` reads it)
    indices: torch.Tensor  # (K,) indices into the pool of the images that got a pseudo-label
    labels: torch.Tensor  # (K,) their pseudo-labels
    added_per_round: list  # how many pool images were labelled in each round


def pseudo_label(train_features: torch.Tensor, train_labels: torch.Tensor, pool_features: torch.Tensor,
                 threshold: float = 0.9, per_class: int | None = None, rounds: int = 3,
                 weight_decay: float = 1e-3, exclude: torch.Tensor | None = None) -> PseudoLabels:
    """Self-training with pseudo-labels (Lee 2013) on frozen features.

    Each round fits ``fit_linear`` on the labeled rows plus the pseudo-labelled ones, predicts the
    unlabeled ``pool``, and gives a pseudo-label to every pool image whose top probability is at
    least ``threshold``, keeping at most ``per_class`` of the most confident per class (so one
    easy class cannot flood the labeled set). Good features make confident predictions mostly
    right; if the classifier is confidently wrong, the errors are learned as truth (confirmation
    bias), which is why the threshold is high.

    Args:
        train_features, train_labels: (N, D), (N,) the labeled rows.
        pool_features: (M, D) unlabeled rows (their labels are never looked at).
        threshold: minimum softmax probability for a pseudo-label.
        per_class: at most this many pseudo-labels per class and round (None: no cap).
        rounds: fit-label-refit rounds.
        exclude: indices of pool rows that never get a pseudo-label: the labeled rows themselves, where the
            pool is the whole split they were drawn from (they would come back as copies of the labeled set).

    >>> g = torch.Generator().manual_seed(0)
    >>> centres = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    >>> pool_y = torch.arange(2).repeat(50)
    >>> pool = centres[pool_y] + torch.randn(100, 2, generator=g)
    >>> result = pseudo_label(centres, torch.tensor([0, 1]), pool, threshold=0.9, rounds=2)
    >>> bool((result.labels == pool_y[result.indices]).float().mean() > 0.9), len(result.indices) > 50
    (True, True)
    >>> int(torch.isin(pseudo_label(centres, torch.tensor([0, 1]), pool, exclude=torch.arange(10)).indices,
    ...                torch.arange(10)).sum())
    0
    """
    if len(train_features) != len(train_labels) or train_features.shape[1:] != pool_features.shape[1:]:
        raise ValueError(f"train_features {tuple(train_features.shape)}, train_labels {tuple(train_labels.shape)} and "
                         f"pool_features {tuple(pool_features.shape)} must agree: (N, D), (N,), (M, D)")
    if not len(train_labels):
        raise ValueError("the labeled rows are empty: train_features and train_labels have 0 rows; pseudo-labels "
                         "come from a classifier fitted on labeled rows, so give at least one (e.g. the features "
                         "of data.per_class(1))")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold} is a probability: choose one in (0, 1], e.g. 0.9")
    num_classes = int(train_labels.max()) + 1
    indices, labels, added = torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), []
    classifier = fit_linear(train_features, train_labels, weight_decay, num_classes=num_classes)
    for _ in range(rounds):
        probs = class_scores(classifier, pool_features, num_classes)  # (M, C)
        confidence, guess = probs.max(1)  # (M,), (M,)
        if exclude is not None:
            confidence[exclude] = -1.0  # below any threshold
        picked = []
        for k in range(num_classes):
            idx = ((guess == k) & (confidence >= threshold)).nonzero().squeeze(1)
            idx = idx[confidence[idx].argsort(descending=True)][:per_class]  # the most confident first
            picked.append(idx)
        indices = torch.cat(picked).sort().values
        labels = guess[indices]
        added.append(len(indices))
        if not len(indices):
            break
        classifier = fit_linear(torch.cat([train_features, pool_features[indices]]),
                                torch.cat([train_labels, labels]), weight_decay, num_classes=num_classes)
    return PseudoLabels(classifier, indices, labels, added)

"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

BYOL without the momentum encoder: both branches share one network; one branch predicts the other's
projection, and the other branch is *detached* (stop-gradient). The paper's finding, which notebook 03
reproduces: without the stop-gradient the representations collapse to a constant (the std of the
L2-normalised projections falls towards 0), with it they do not.

Shapes: views x0, x1 (B, 3, S, S) -> projections z0, z1 (B, out_dim) -> predictions p0, p1 (B, out_dim)
-> loss = negative cosine similarity of p to the (detached) z of the other view, symmetrised.

Sizes and optimiser: the heads default to lightly's CIFAR-10 benchmark (projection 512 -> 128, predictor
bottleneck 64), trained there with SGD (lr 0.06 at batch 128, momentum 0.9, weight decay 5e-4), as the
paper does. SimSiam is the most fragile of the methods: small heads and SGD are the setting in which its
stop-gradient alone keeps the predictions from collapsing (the runs behind this choice: docs/tuning_history.md).

>>> import torch, sslkit
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> SimSiam(backbone, dim).training_step(sslkit.load_dataset("shapes", "train", n=8).images, None).ndim
0
"""

from __future__ import annotations

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
from torch import nn

from . import predictor_param_groups
from ..augment import AugmentParams, two_views


class SimSiam(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, hidden_dim: int = 512, pred_dim: int = 64,
                 out_dim: int = 128, stop_gradient: bool = True, augment: AugmentParams | None = None,
                 predictor_lr_scale: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(feature_dim, hidden_dim, out_dim)
        self.prediction_head = SimSiamPredictionHead(out_dim, pred_dim, out_dim)
        self.criterion = NegativeCosineSimilarity()
        self.stop_gradient = stop_gradient  # False: the ablation that collapses
        self.augment = augment or AugmentParams()
        self.predictor_lr_scale = predictor_lr_scale  # the predictor's lr / the rest's (param_groups)
        predictor_param_groups(self, predictor_lr_scale)  # a bad value fails here, not at the first step

    def param_groups(self):
        return predictor_param_groups(self, self.predictor_lr_scale)

    def forward(self, x):
        z = self.projection_head(self.backbone(x))  # (B, out_dim)
        p = self.prediction_head(z)  # (B, out_dim)
        return z, (z.detach() if self.stop_gradient else z), p

    def training_step(self, images, labels=None):
        x0, x1 = two_views(images, self.augment)
        return self.loss(x0, x1)

    def loss(self, x0, x1):
        _, z0, p0 = self(x0)
        _, z1, p1 = self(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

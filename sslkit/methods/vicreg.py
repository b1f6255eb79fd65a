"""VICReg (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning").

No negatives, no momentum encoder, no predictor, no stop-gradient: the loss itself rules collapse out.
Its three terms, on the projections of two views: **invariance** (the mean squared distance between
the two views' embeddings), **variance** (a hinge that keeps the std of every embedding dimension over
the batch above 1: a collapsed embedding has std 0) and **covariance** (pushes the off-diagonal
covariances to 0, so the dimensions carry different information). lightly's ``VICRegLoss`` weighs
them 25, 25 and 1, as the paper.

Shapes: images (B, 3, H, W) uint8 -> views x0, x1 (B, 3, S, S) -> features (B, D) -> embeddings
z0, z1 (B, out_dim) -> loss (scalar).

>>> import sslkit
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> VICReg(backbone, dim).training_step(sslkit.load_dataset("shapes", "train", n=8).images, None).ndim
0
"""

from __future__ import annotations

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from torch import nn

from ..augment import AugmentParams, two_views


class VICReg(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, hidden_dim: int = 512, out_dim: int = 512,
                 augment: AugmentParams | None = None, gather_distributed: bool = False):
        super().__init__()
        self.backbone = backbone
        self.projection_head = VICRegProjectionHead(feature_dim, hidden_dim, out_dim)  # the paper's "expander"
        self.criterion = VICRegLoss(gather_distributed=gather_distributed)
        self.augment = augment or AugmentParams()

    def forward(self, x):
        return self.projection_head(self.backbone(x))  # (B, out_dim)

    def training_step(self, images, labels=None):
        if len(images) < 2:
            raise ValueError("VICReg needs a batch of at least 2 images: its variance and covariance terms are "
                             "statistics over the batch; raise BATCH_SIZE (--batch-size in the shell), or give more images")
        x0, x1 = two_views(images, self.augment)  # (B, 3, S, S) each
        return self.loss(x0, x1)

    def loss(self, x0, x1):
        return self.criterion(self(x0), self(x1))

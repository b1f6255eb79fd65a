"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction").

No negatives, no momentum encoder, no predictor: the loss rules collapse out. The embeddings of two
views are standardised per dimension over the batch, and their cross-correlation matrix (out_dim x
out_dim) is pushed towards the identity: the diagonal to 1 (each dimension agrees between the two
views) and the off-diagonal to 0 (different dimensions carry different information), the latter
weighted by ``lambda_param`` (lightly's ``BarlowTwinsLoss``, 0.005 as in the paper).

Shapes: images (B, 3, H, W) uint8 -> views x0, x1 (B, 3, S, S) -> features (B, D) -> embeddings
z0, z1 (B, out_dim) -> loss (scalar).

>>> import sslkit
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> BarlowTwins(backbone, dim).training_step(sslkit.load_dataset("shapes", "train", n=8).images, None).ndim
0
"""

from __future__ import annotations

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules.heads import BarlowTwinsProjectionHead
from torch import nn

from ..augment import AugmentParams, two_views


class BarlowTwins(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, hidden_dim: int = 512, out_dim: int = 512,
                 lambda_param: float = 0.005, augment: AugmentParams | None = None, gather_distributed: bool = False):
        super().__init__()
        self.backbone = backbone
        self.projection_head = BarlowTwinsProjectionHead(feature_dim, hidden_dim, out_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=lambda_param, gather_distributed=gather_distributed)
        self.augment = augment or AugmentParams()

    def forward(self, x):
        return self.projection_head(self.backbone(x))  # (B, out_dim)

    def training_step(self, images, labels=None):
        if len(images) < 2:
            raise ValueError("Barlow Twins needs a batch of at least 2 images: it standardises every dimension "
                             "over the batch; raise BATCH_SIZE (--batch-size in the shell), or give more images")
        x0, x1 = two_views(images, self.augment)  # (B, 3, S, S) each
        return self.loss(x0, x1)

    def loss(self, x0, x1):
        return self.criterion(self(x0), self(x1))

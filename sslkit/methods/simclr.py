"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Two random views of every image go through the backbone and a projection head; the NT-Xent loss
pulls the two projections of the same image together and pushes the other 2B - 2 projections in the
batch away. The temperature sets how hard the loss concentrates on the closest negatives.

Shapes: images (B, 3, H, W) uint8 -> views x0, x1 (B, 3, S, S) -> features (B, D) -> projections
z0, z1 (B, out_dim) -> loss (scalar).

>>> import torch, sslkit
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> method = SimCLR(backbone, dim)
>>> method.training_step(sslkit.load_dataset("shapes", "train", n=8).images, None).ndim
0
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from ..augment import AugmentParams, two_views


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, temperature: float = 0.1, hidden_dim: int = 512,
                 out_dim: int = 128, augment: AugmentParams | None = None, gather_distributed: bool = False):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(feature_dim, hidden_dim, out_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)
        self.augment = augment or AugmentParams()

    def forward(self, x):
        return self.projection_head(self.backbone(x))  # (B, out_dim)

    def training_step(self, images, labels=None):
        if len(images) < 2:
            raise ValueError("SimCLR needs a batch of at least 2 images: the other images are the negatives; "
                             "raise BATCH_SIZE (--batch-size in the shell), or give more images")
        x0, x1 = two_views(images, self.augment)  # (B, 3, S, S) each
        return self.loss(x0, x1)

    def loss(self, x0, x1):
        z0, z1 = self(x0), self(x1)  # (B, out_dim) each
        return self.criterion(z0, z1)

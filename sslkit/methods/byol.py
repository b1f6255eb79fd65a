"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

No negatives at all: an online network (backbone, projection head, *predictor*) learns to predict
the projection that a momentum *target* network gives for the other view. The predictor and the
slowly moving target are what keep the representations from collapsing to a constant.

Shapes: views x0, x1 (B, 3, S, S) -> online predictions p0, p1 (B, out_dim), target projections
z0, z1 (B, out_dim) -> loss = negative cosine similarity of p to the other view's z, averaged over the two
directions as lightly's example and SimSiam do (between -1 and 1; -1 is perfect agreement).

>>> import torch, sslkit
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> BYOL(backbone, dim).training_step(sslkit.load_dataset("shapes", "train", n=8).images, None).ndim
0
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from . import predictor_param_groups, target_momentum_schedule
from ..augment import AugmentParams, two_views


class BYOL(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, hidden_dim: int = 1024, out_dim: int = 128,
                 target_momentum: float | tuple[float, float] = 0.99, augment: AugmentParams | None = None,
                 predictor_lr_scale: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(feature_dim, hidden_dim, out_dim)
        self.prediction_head = BYOLPredictionHead(out_dim, hidden_dim, out_dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        self.target_momentum = target_momentum_schedule(target_momentum)  # (start, end), e.g. (0.99, 1.0)
        self.augment = augment or AugmentParams()
        self.predictor_lr_scale = predictor_lr_scale  # the predictor's lr / the rest's (param_groups)
        predictor_param_groups(self, predictor_lr_scale)  # a bad value fails here, not at the first step

    def param_groups(self):
        return predictor_param_groups(self, self.predictor_lr_scale)

    def forward(self, x):
        return self.prediction_head(self.projection_head(self.backbone(x)))  # p (B, out_dim)

    @torch.no_grad()
    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x))  # z (B, out_dim), no gradient

    def training_step(self, images, labels=None):
        x0, x1 = two_views(images, self.augment)
        return self.loss(x0, x1)

    def loss(self, x0, x1):
        p0, p1 = self(x0), self(x1)
        z0, z1 = self.forward_momentum(x0), self.forward_momentum(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

    def on_step_end(self, step, total_steps):
        m = cosine_schedule(step, total_steps, *self.target_momentum)  # rises from start to end
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)

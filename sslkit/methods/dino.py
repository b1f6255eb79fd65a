"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").

Self-distillation without labels: a student network learns to match the output distribution of a
momentum teacher over K "prototype" dimensions, across views. The teacher sees only the global crops,
the student every crop (multi-crop: two global and several small local crops). Two tricks prevent
collapse, both in lightly's ``DINOLoss``: *centring* the teacher's outputs (subtract a running mean,
so no single dimension wins) and *sharpening* them (a low teacher temperature, so the output is not
uniform). ``teacher_temp`` is the knob notebook 03 turns.

Shapes: views [x_g0, x_g1, x_l0, ...] (B, 3, S_i, S_i) -> student outputs (B, K) per view, teacher
outputs (B, K) per global view -> cross-entropy between them over all pairs of different views.

>>> import torch, sslkit
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> DINO(backbone, dim, num_local=2).training_step(sslkit.load_dataset("shapes", "train", n=8).images, None).ndim
0
"""

from __future__ import annotations

import copy
import warnings

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from . import target_momentum_schedule
from ..augment import AugmentParams, dino_view_params, multi_crop


class DINO(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, out_dim: int = 1024, hidden_dim: int = 512,
                 bottleneck_dim: int = 64, teacher_temp: float = 0.04, student_temp: float = 0.1,
                 num_local: int = 2, image_size: int = 32, target_momentum: float | tuple[float, float] = 0.99,
                 global_views: AugmentParams | None = None):
        super().__init__()
        self.backbone = backbone
        with warnings.catch_warnings():  # lightly's head uses torch's old weight_norm, which torch says it deprecates:
            # a FutureWarning about lightly's code that a learner cannot act on
            warnings.filterwarnings("ignore", message=r"`torch\.nn\.utils\.weight_norm` is deprecated",
                                    category=FutureWarning)
            self.projection_head = DINOProjectionHead(feature_dim, hidden_dim, bottleneck_dim, out_dim)
            self.projection_head_momentum = DINOProjectionHead(feature_dim, hidden_dim, bottleneck_dim, out_dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum.load_state_dict(self.projection_head.state_dict())
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = DINOLoss(output_dim=out_dim, warmup_teacher_temp=teacher_temp, teacher_temp=teacher_temp,
                                  student_temp=student_temp)
        self.views = dino_view_params(image_size, num_local=num_local, global_views=global_views)
        self.target_momentum = target_momentum_schedule(target_momentum)  # (start, end), e.g. (0.99, 1.0)

    def forward(self, x):
        return self.projection_head(self.backbone(x))  # student (B, out_dim)

    @torch.no_grad()
    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x))  # teacher (B, out_dim)

    def training_step(self, images, labels=None):
        views = multi_crop(images, self.views)  # 2 global (B, 3, S, S), then local (B, 3, s, s)
        return self.loss(views)

    def loss(self, views):
        teacher_out = [self.forward_momentum(v) for v in views[:2]]
        student_out = [self(v) for v in views]
        return self.criterion(teacher_out, student_out)

    def on_step_end(self, step, total_steps):
        m = cosine_schedule(step, total_steps, *self.target_momentum)  # rises from start to end
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)

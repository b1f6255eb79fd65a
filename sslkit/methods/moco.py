"""MoCo v2 (He et al. 2020, "Momentum Contrast"; Chen et al. 2020, "Improved Baselines with Momentum
Contrastive Learning").

Like SimCLR, but the negatives come from a *queue* of keys from earlier batches, so there can be many
more of them than the batch holds, and the keys come from a *momentum encoder*: a slowly moving
average of the online network (no gradient), which keeps the queued keys consistent.

Shapes: views x0 (queries) and x1 (keys) (B, 3, S, S) -> q (B, out_dim) from the online network,
k (B, out_dim) from the momentum network -> NT-Xent against the queue (queue_size, out_dim).

``symmetric=True`` also makes x1 a query against x0's key and averages the two losses, as the MoCo authors' CIFAR-10
demonstration does (facebookresearch/moco, ``colab/moco_cifar10_demo.ipynb``): every view is a query, as in SimCLR,
for one more forward pass of each network per step; both keys enter the queue after the step.

>>> import torch, sslkit
>>> backbone, dim = sslkit.make_backbone("resnet_tiny")
>>> method = MoCo(backbone, dim, queue_size=16)
>>> method.training_step(sslkit.load_dataset("shapes", "train", n=8).images, None).ndim
0
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils import dist as lightly_dist
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from . import target_momentum_schedule
from ..augment import AugmentParams, two_views


class MoCo(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, temperature: float = 0.2, queue_size: int = 4096,
                 hidden_dim: int = 512, out_dim: int = 128, target_momentum: float | tuple[float, float] = 0.99,
                 augment: AugmentParams | None = None, symmetric: bool = False, gather_distributed: bool = False):
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size={queue_size}: MoCo needs a queue of at least one batch of keys")
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(feature_dim, hidden_dim, out_dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        # under torchrun, gather_distributed queues every process's keys (as one process with the global batch
        # would), so the queues stay the same on every process
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(queue_size, out_dim),
                                    gather_distributed=gather_distributed)
        bank = self.criterion.memory_bank  # lightly keeps the queue out of state_dict(); a checkpoint needs it, so
        for name in ("bank", "bank_ptr"):  # that a resumed run goes on with the keys it had queued
            bank.register_buffer(name, getattr(bank, name), persistent=True)
        self.queue_size = queue_size
        self.target_momentum = target_momentum_schedule(target_momentum)  # (start, end), e.g. (0.99, 1.0)
        self.augment = augment or AugmentParams()
        self.symmetric = symmetric  # both views queries (the loss averaged), or x0 queries and x1 keys only

    def forward(self, x):
        return self.projection_head(self.backbone(x))  # queries (B, out_dim)

    @torch.no_grad()
    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x))  # keys (B, out_dim)

    def check_batch_size(self, batch_size: int):
        """The queue takes whole batches of keys (two per step when symmetric; every process's under torchrun):
        its size must be a multiple."""
        processes = lightly_dist.world_size() if self.criterion.gather_distributed else 1
        keys = batch_size * (2 if self.symmetric else 1) * processes
        if self.queue_size % keys:
            what = f"twice the batch size {batch_size} (symmetric: both views' keys)" if self.symmetric else \
                f"the batch size {batch_size}"
            what += f" times {processes} processes" if processes > 1 else ""
            raise ValueError(f"queue_size={self.queue_size} is not a multiple of {what}: the queue would wrap "
                             f"mid-batch; use a queue of k * {keys} (e.g. queue_size={16 * keys})")

    def training_step(self, images, labels=None):
        self.check_batch_size(len(images))
        x0, x1 = two_views(images, self.augment)
        return self.loss(x0, x1)

    def loss(self, x0, x1):
        if not self.symmetric:
            return self.criterion(self(x0), self.forward_momentum(x1))  # queries and keys (B, out_dim) each
        # both directions in one call, so both see the queue as it was before this step (a view's own key in it
        # would be a negative that is the same image); the loss is the mean over the 2B queries, both keys queued
        q = torch.cat([self(x0), self(x1)])  # (2B, out_dim): each view through the network on its own (BatchNorm)
        k = torch.cat([self.forward_momentum(x1), self.forward_momentum(x0)])  # the other view's key, row by row
        return self.criterion(q, k)

    def on_step_end(self, step, total_steps):
        m = cosine_schedule(step, total_steps, *self.target_momentum)  # rises from start to end
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)

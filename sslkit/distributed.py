"""Training on many processes with PyTorch's own engine: torchrun and DistributedDataParallel.

``torchrun`` starts one process per GPU (or per CPU slot, with the gloo backend) and tells each
its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; this module turns that into a ``DistInfo`` and
provides the few pieces the training loop needs:

- ``init_distributed``: join the process group (NCCL on GPUs, gloo on CPUs), pick the device;
- ``ddp_step``: wrap a method so that its loss runs through ``DistributedDataParallel``, which
  averages gradients across processes in the backward pass;
- ``shard``: each process takes its own part of every epoch's shuffled order (what
  ``DistributedSampler`` does for a DataLoader);
- ``scale_lr``: the linear and square-root learning-rate scaling rules for a larger global batch.

Contrastive losses also need negatives from the other processes: lightly's losses gather them
(``NTXentLoss(gather_distributed=True)``), with gradients flowing back to the process that made
them. BatchNorm statistics stay per process unless converted to ``SyncBatchNorm`` (GPU only).

Every process takes ``batch_size`` images a step, so the global batch is ``batch_size`` times the
number of processes; ``scale_lr`` (``--set lr_scaling=linear`` or ``sqrt``) raises the learning rate
with it. ``tests/test_distributed.py`` checks that two processes with batch B compute the loss and
gradients (and, through ``sslkit.train.train``, the updates) of one process with batch 2B.

Commands (the same script on one CPU, many GPUs, many nodes):

    torchrun --nproc_per_node=2 -m sslkit.train simclr --profile smoke --device cpu   # 2 CPU processes (gloo)
    torchrun --nproc_per_node=8 -m sslkit.train simclr --profile full                 # 8 GPUs, one node (NCCL)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 --rdzv-id=run1 \\
        -m sslkit.train simclr --profile full                                         # on each of 2 nodes

>>> info = init_distributed("cpu")      # not under torchrun: one process
>>> info.rank, info.world_size, info.is_main
(0, 1, True)
>>> scale_lr(0.3, batch_size=1024, base_batch_size=256), scale_lr(0.3, 1024, 256, rule="sqrt")
(1.2, 0.6)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .config import resolve_device


@dataclass
class DistInfo:
    """Where this process stands among all of them."""

    rank: int = 0  # 0 .. world_size - 1; rank 0 logs and writes checkpoints and results
    world_size: int = 1  # number of processes
    local_rank: int = 0  # rank on this node: which GPU this process uses
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun set up (a no-op for a single process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(device=resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, dev)


class _Call(nn.Module):
    """Makes ``method.<name>(...)`` the ``forward`` of a module, so DDP can run it."""

    def __init__(self, method: nn.Module, name: str = "training_step"):
        super().__init__()
        self.method, self.name = method, name

    def forward(self, *args):
        return getattr(self.method, self.name)(*args)


def ddp_step(method: nn.Module, info: DistInfo, name: str = "training_step"):
    """A callable computing ``method.<name>(...)`` whose backward averages gradients across processes.

    On one process it is the method's own function. On GPUs, BatchNorm layers become SyncBatchNorm.
    """
    if not info.distributed:
        return getattr(method, name)
    if info.device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(_Call(method, name), device_ids=ids)


def shard(order: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This process's part of a shuffled order: every ``world_size``-th index from ``rank``.

    The order is first cut to a multiple of ``world_size`` so every process takes as many steps.
    """
    usable = len(order) - len(order) % info.world_size
    return order[:usable][info.rank::info.world_size]


def scale_lr(lr: float, batch_size: int, base_batch_size: int = 256, rule: str = "linear") -> float:
    """The learning rate for a global ``batch_size``, given one tuned at ``base_batch_size``.

    "linear" (Goyal et al. 2017, SGD with momentum; SimCLR's main runs with LARS): lr * B / B0.
    "sqrt" (SimCLR appendix B.1: better with LARS for small batches and few epochs): lr * sqrt(B / B0).
    """
    if rule == "linear":
        return lr * batch_size / base_batch_size
    if rule == "sqrt":
        return lr * math.sqrt(batch_size / base_batch_size)
    raise ValueError(f"unknown lr scaling rule {rule!r}; choose one of: linear, sqrt")

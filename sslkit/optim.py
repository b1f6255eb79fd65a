"""The optimizer and the learning-rate schedule of the training loop, and its seeding.

``make_optimizer`` builds AdamW (default) or SGD with momentum from a ``Config``; ``lr_at`` and
``scheduled_lr`` give the learning rate at a point of the run: a linear warm-up from 0, then a
cosine decay to 0 (or a constant rate). ``train`` sets it before every step from
``progress = max(step / total_steps, elapsed / time_budget)``, so a run with a time budget still
warms up and decays by the time it stops.

>>> [round(scheduled_lr(p, 1.0, 0.2, "constant"), 2) for p in (0.0, 0.1, 0.2, 0.6, 1.0)]
[0.0, 0.5, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import Config

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("cosine", "constant")


def lr_at(progress: float, lr: float, warmup_fraction: float) -> float:
    """Learning rate at ``progress`` in [0, 1]: linear warm-up from 0, then cosine decay to 0.

    >>> [round(lr_at(p, 1.0, 0.2), 3) for p in (0.0, 0.1, 0.2, 0.6, 1.0)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if progress < warmup_fraction:
        return lr * progress / warmup_fraction
    rest = (progress - warmup_fraction) / max(1.0 - warmup_fraction, 1e-12)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(rest, 1.0)))


def scheduled_lr(progress: float, lr: float, warmup_fraction: float, schedule: str = "cosine") -> float:
    """Learning rate at ``progress`` in [0, 1] under ``schedule``: "cosine" (``lr_at``) or "constant" after the
    same linear warm-up."""
    if schedule == "cosine":
        return lr_at(progress, lr, warmup_fraction)
    return lr * min(1.0, progress / warmup_fraction if warmup_fraction else 1.0)


def make_optimizer(method: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The optimizer ``train`` uses: AdamW (default) or SGD with momentum, from ``cfg``.

    Knobs in ``cfg.extra``: ``optimizer`` ("adamw" or "sgd"), ``betas`` (AdamW, default (0.9, 0.999);
    MAE uses (0.9, 0.95)), ``momentum`` (SGD, default 0.9), ``lr_schedule`` ("cosine" after warm-up,
    or "constant" after warm-up). A method may define ``param_groups()`` returning torch parameter
    groups; a group's ``lr_scale`` multiplies the scheduled learning rate (fine-tuning gives the
    backbone a smaller one than the head) and its ``weight_decay`` replaces ``cfg.weight_decay``.

    >>> import sslkit
    >>> cfg = sslkit.make_config("smoke", optimizer="sgd", momentum=0.8)
    >>> make_optimizer(torch.nn.Linear(2, 2), cfg).defaults["momentum"]
    0.8
    """
    name = cfg.extra.get("optimizer", "adamw")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    schedule = cfg.extra.get("lr_schedule", "cosine")
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}")
    if hasattr(method, "param_groups"):
        groups = [dict(g) for g in method.param_groups()]
        for g in groups:
            g["params"] = [p for p in g["params"] if p.requires_grad]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": [p for p in method.parameters() if p.requires_grad]}]
        groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(f"{type(method).__name__} has no trainable parameters; did you freeze the backbone?")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.extra.get("momentum", 0.9),
                               weight_decay=cfg.weight_decay)
    betas = cfg.extra.get("betas", (0.9, 0.999))
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2
            and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"betas={betas!r}: give AdamW's two averaging coefficients, each in [0, 1), e.g. "
                         f"betas=(0.9, 0.999)")
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(betas))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group ``lr``, times the group's ``lr_scale`` where it has one."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generators (CPU and GPU) and return a CPU generator for shuffling.

    >>> g = seed_everything(0)
    >>> torch.randperm(4, generator=g).tolist() == torch.randperm(4, generator=seed_everything(0)).tolist()
    True
    """
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)

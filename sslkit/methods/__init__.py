"""Self-supervised methods, one small module each, all with the same shape.

Every method is an ``nn.Module`` built as ``Method(backbone, feature_dim, **knobs)`` with a
``backbone`` attribute and ``training_step(images, labels) -> loss`` (plus ``on_step_end`` for
momentum encoders), so ``sslkit.train.train`` runs any of them, and a diff between two method
modules shows only the method. Losses, heads and momentum utilities come from lightly.

``make_method(name, backbone, feature_dim, **knobs)`` builds one by name; ``METHODS`` lists them.
"""

from __future__ import annotations

import importlib

# name -> "module:Class" (modules load on first use)
METHODS = {
    "rotation": "sslkit.pretext:Rotation",
    "jigsaw": "sslkit.pretext:Jigsaw",
    "simclr": "sslkit.methods.simclr:SimCLR",
    "moco": "sslkit.methods.moco:MoCo",
    "byol": "sslkit.methods.byol:BYOL",
    "simsiam": "sslkit.methods.simsiam:SimSiam",
    "dino": "sslkit.methods.dino:DINO",
    "barlowtwins": "sslkit.methods.barlowtwins:BarlowTwins",
    "vicreg": "sslkit.methods.vicreg:VICReg",
    "mae": "sslkit.methods.mae:MAE",
}


def method_class(name: str):
    """The class that implements method ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def target_momentum_schedule(value) -> tuple[float, float]:
    """The (start, end) of a momentum network's schedule (MoCo, BYOL, DINO): after every step the target's
    weights move to ``m * target + (1 - m) * online``, with ``m`` rising from start to end on a cosine over the run
    (lightly's ``cosine_schedule``). A single number is the start, ending at 1 (BYOL's schedule).

    ``on_step_end(step, total_steps)`` gets the steps done (1 after the first): the update after step k uses
    ``cosine_schedule(k, total_steps)``, as lightly's examples update before step k+1 (counted from 0) with it; their
    update before the first step, with the start value, changes nothing (the target is still a copy of the online
    network), so the two make the same updates.

    >>> target_momentum_schedule(0.9), target_momentum_schedule((0.99, 0.999))
    ((0.9, 1.0), (0.99, 0.999))
    """
    pair = (value, 1.0) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    try:
        start, end = (float(v) for v in pair)
    except (TypeError, ValueError):
        start = end = float("nan")
    if not 0.0 <= start <= end <= 1.0:  # also catches nan
        raise ValueError(f"target_momentum={value!r}: give where the target's momentum starts, a number in [0, 1] (it rises "
                         f"to 1), or a pair (start, end) with 0 <= start <= end <= 1, e.g. 0.99 or (0.99, 1.0)")
    return start, end


def predictor_param_groups(method, lr_scale: float) -> list[dict]:
    """Parameter groups (``sslkit.optim.make_optimizer``) giving a method's ``prediction_head`` (BYOL, SimSiam)
    ``lr_scale`` times the learning rate of the rest. A faster predictor stays near its optimum for the current
    encoder, which is what keeps these methods from collapsing and speeds up their learning (Tian et al. 2021,
    "Understanding self-supervised learning dynamics without contrastive pairs"; SimSiam's paper already found a
    predictor at a fixed, not decaying, lr better). With AdamW its weight decay scales too.
    """
    if isinstance(lr_scale, bool) or not isinstance(lr_scale, (int, float)) or not lr_scale > 0:
        raise ValueError(f"predictor_lr_scale={lr_scale!r}: give a positive number, the predictor's learning rate "
                         f"as a multiple of the rest's (1: the same; notebook 03 uses 4 for BYOL and SimSiam)")
    if lr_scale == 1:  # one group, as a method without param_groups: its checkpoints' optimizer state still loads
        return [{"params": list(method.parameters())}]
    head = list(method.prediction_head.parameters())
    ids = {id(p) for p in head}
    return [{"params": [p for p in method.parameters() if id(p) not in ids]}, {"params": head, "lr_scale": lr_scale}]


def make_method(name: str, backbone, feature_dim: int | None = None, **knobs):
    """Build method ``name`` around ``backbone``; ``knobs`` go to its constructor (e.g. temperature=0.2)."""
    return method_class(name)(backbone, feature_dim or backbone.feature_dim, **knobs)

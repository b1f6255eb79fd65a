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


def make_method(name: str, backbone, feature_dim: int | None = None, **knobs):
    """Build method ``name`` around ``backbone``; ``knobs`` go to its constructor (e.g. temperature=0.2)."""
    return method_class(name)(backbone, feature_dim or backbone.feature_dim, **knobs)

"""Profiles and the one config dataclass every notebook and script passes around.

A notebook's ``parameters`` cell sets ``PROFILE`` and any knobs (``None`` means "the profile's
value"), each named once; ``make_config(PROFILE, **parameters(globals()))`` resolves them into a
``Config`` once, and that object is passed explicitly (``train(model, data, cfg)``). Nothing in
the package reads notebook globals unless handed them.

Profiles:

- ``smoke``: for CI; every notebook within 60 s on 2 CPU cores; numbers are meaningless.
- ``lesson`` (default): a meaningful result on a laptop CPU within minutes.
- ``full``: paper-like settings on a GPU with real data.

The environment variable ``SSLKIT_PROFILE`` overrides the notebook's ``PROFILE`` (teachers and CI
use it to run every notebook at one profile, e.g. ``SSLKIT_PROFILE=smoke pytest --nbval-lax``).

>>> cfg = make_config("smoke", seed=3)
>>> cfg.profile, cfg.seed, cfg.image_size
('smoke', 3, 32)
>>> make_config("lesson", num_epochs=2).num_epochs
2
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field

PROFILES = ("smoke", "lesson", "full")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class Config:
    """Every knob a run needs, with the profile's values filled in."""

    profile: str = "lesson"  # "smoke" (CI), "lesson" (laptop CPU), "full" (GPU, real data)
    dataset: str = "shapes"  # "shapes" (generated offline), "cifar10", "stl10", "imagenette", "folder" or a path
    data_dir: str | None = None  # the image folder for dataset="folder"; None: data/ for the real datasets
    image_size: int = 32  # images are square, image_size x image_size pixels
    num_unlabeled: int | None = 10_000  # images in the unlabeled split that SSL trains on (None: all of it)
    num_train: int = 5_000  # labeled images: the kNN bank and the linear probe's training set
    num_test: int = 2_000  # labeled test images (and as many in the shifted split)
    backbone: str = "resnet_small"  # see sslkit.models.BACKBONES
    num_epochs: int = 10  # passes over the unlabeled split
    batch_size: int = 256  # images per step (two views each for joint-embedding methods)
    lr: float = 3e-3  # peak learning rate, reached after warm-up, then cosine decay
    weight_decay: float = 1e-4  # decoupled weight decay (AdamW)
    warmup_epochs: float = 1.0  # linear warm-up from 0 to lr, in epochs
    time_budget_s: float | None = None  # an opt-in cap: fit the schedule into this many seconds (None: the planned epochs)
    device: str = "auto"  # "auto" (cuda, then mps, then cpu), "cpu", "cuda" or "mps"
    num_workers: int = 0  # DataLoader worker processes for the PIL path (0: in the main process)
    seed: int = 0  # same seed, same machine -> same numbers
    recipe: str | None = None  # the recipe of sslkit.recipes these values came from (None: none)
    extra: dict = field(default_factory=dict)  # notebook-specific knobs, e.g. {"temperature": 0.1}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# each profile's values; fields not named keep the dataclass default
PROFILE_VALUES = {
    "smoke": dict(num_unlabeled=512, num_train=500, num_test=200, backbone="resnet_tiny", num_epochs=1,
                  batch_size=128, warmup_epochs=0.0, device="cpu"),
    "lesson": dict(),
    "full": dict(dataset="cifar10", num_unlabeled=50_000, num_train=50_000, num_test=10_000, backbone="resnet18",
                 num_epochs=200, batch_size=512, lr=6e-3, weight_decay=1e-6, warmup_epochs=10.0, num_workers=8),
}


def make_config(profile: str = "lesson", notebook: str | None = None, recipe: str | None = None,
                **overrides) -> Config:
    """Resolve a profile, a training recipe, a notebook's own values and overrides into a ``Config``.

    Precedence: overrides > ``NOTEBOOK_VALUES[notebook][profile]`` > ``recipe(recipe, profile)`` (both in
    ``sslkit.recipes``) > ``PROFILE_VALUES[profile]`` > the dataclass defaults. Overrides whose value is ``None``
    are ignored (a parameters cell's "use the recipe's value"). Names that are not fields of ``Config`` go into
    ``cfg.extra``; ``cfg.recipe`` names the recipe.
    ``$SSLKIT_PROFILE``, when set, replaces ``profile``. A prepared dataset (``sslkit.prepared``) brings its
    image size and trains on its whole unlabeled split, unless the caller sets ``image_size`` or
    ``num_unlabeled``.
    """
    profile = os.environ.get("SSLKIT_PROFILE") or profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    from .recipes import NOTEBOOK_VALUES, recipe as recipe_values

    names = {f.name for f in dataclasses.fields(Config)}
    own = NOTEBOOK_VALUES.get(notebook, {}).get(profile, {}) if notebook else {}
    given = {k.lower() for k, v in overrides.items() if v is not None}  # what the caller set, not the notebook
    overrides = {**(recipe_values(recipe, profile) if recipe else {}), **own,
                 **{k.lower(): v for k, v in overrides.items() if v is not None}}
    values = {**PROFILE_VALUES[profile], "profile": profile, "recipe": recipe}
    extra = {}
    for key, value in overrides.items():
        if value is None:
            continue
        key = key.lower()
        if key in names and key not in ("extra", "recipe"):
            values[key] = value
        else:
            extra[key] = value
    _adopt_prepared(values, given)
    cfg = Config(**values)
    cfg.extra.update(extra)
    _validate(cfg)
    return cfg


# fields that say where a run goes or how it is evaluated, not what it trains (the seed is compared on its own:
# load_or_train)
RUN_ONLY = ("profile", "device", "num_workers", "seed", "extra", "num_train", "num_test")


def changed_settings(cfg: Config, notebook: str | None = None) -> dict:
    """``{name: (value, default)}`` for every setting that trains ``cfg``'s model and differs from what
    ``make_config`` gives ``notebook`` with ``cfg``'s profile and recipe and no knob set: what a user changed (e.g.
    a "try next" variant). With a recipe, only the knobs its method, backbone, views and training read count (a
    notebook's sweeps and evaluations do not change the model it saves).

    >>> changed_settings(make_config("smoke", num_epochs=3, temperature=0.5))
    {'num_epochs': (3, 1), 'temperature': (0.5, None)}
    >>> changed_settings(make_config("smoke", recipe="simclr", sweep_epochs=2, num_test=100, min_crop=0.3))
    {'min_crop': (0.3, 0.7)}
    """
    default = make_config(cfg.profile, notebook=notebook, recipe=cfg.recipe)
    now, then = cfg.to_dict(), default.to_dict()
    trains = None
    if cfg.recipe:
        from .cli import known_settings
        from .recipes import RECIPES
        trains = known_settings(RECIPES[cfg.recipe]["method"], cfg.backbone)
    out = {k: (v, then[k]) for k, v in now.items() if k not in RUN_ONLY and v != then[k]}
    out.update({k: (v, default.extra.get(k)) for k, v in cfg.extra.items()
                if _plain(v) and v != default.extra.get(k) and (trains is None or k in trains)})
    return out


NOT_KNOBS = ("PROFILE", "RESULTS_PATH", "REPLAY")  # make_config's own argument, where results go, a notebook switch


def parameters(namespace: dict, exclude=NOT_KNOBS) -> dict:
    """The knobs of a notebook's parameters cell, for ``make_config``: every UPPER_CASE name of ``namespace`` (the
    notebook's ``globals()``) whose value a parameters cell can hold (None, a number, a string, a bool, or a list,
    tuple or dict of them), lowercased, except those in ``exclude``. The parameters cell lists each knob once, with
    its comment; this hands them all on (``None``: the recipe's value), so no cell lists them again. Names that later
    cells define (``import torch.nn.functional as F``, a tensor ``A``) are not knobs, and are left out.

    >>> import math
    >>> parameters({"PROFILE": "smoke", "NUM_EPOCHS": 2, "LR": None, "GRID": {"T": [0.1]}, "plt": None, "In": [],
    ...             "_": 1, "M": math, "A": object()})
    {'num_epochs': 2, 'lr': None, 'grid': {'T': [0.1]}}
    """
    return {k.lower(): v for k, v in namespace.items()
            if k.isidentifier() and k.isupper() and not k.startswith("_") and k not in exclude and _plain(v)}


def _plain(value) -> bool:
    """True for what a parameters cell (and papermill) holds: None, numbers, strings, bools, and containers of them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _adopt_prepared(values: dict, given: set):
    """A prepared dataset (``sslkit.prepared``) sets what the user did not: its image size, and the whole
    unlabeled split (it is prepared to train on all of it without holding it in memory)."""
    from pathlib import Path

    path = Path(str(values.get("dataset", ""))).expanduser()
    if not (path / "meta.json").is_file():
        return
    from .prepared import read_meta
    meta = read_meta(path)
    if "image_size" not in given:
        values["image_size"] = meta["size"]
    if "num_unlabeled" not in given:
        values["num_unlabeled"] = None


def _validate(cfg: Config):
    from .data import DATASETS
    from .models import check_backbone
    from pathlib import Path

    _check_field_types(cfg)
    if cfg.dataset not in DATASETS and not Path(cfg.dataset).expanduser().is_dir():
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(DATASETS)}, "
                         f"or give the path of an image folder")
    check_backbone(cfg.backbone)
    if cfg.device not in DEVICES and not cfg.device.startswith("cuda:"):
        raise ValueError(f"unknown device {cfg.device!r}; choose one of: {', '.join(DEVICES)} (or 'cuda:N')")
    for name in ("image_size", "num_epochs", "batch_size", "num_unlabeled", "num_train", "num_test"):
        if name.startswith("num_") and name != "num_epochs" and getattr(cfg, name) is None:
            continue  # the whole split (not for shapes, which load_dataset asks to size)
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be at least 1")
    if not cfg.lr > 0:
        raise ValueError(f"lr={cfg.lr} must be greater than 0 (the profiles use 1e-3 to 0.1)")
    if cfg.time_budget_s is not None and not cfg.time_budget_s > 0:
        raise ValueError(f"time_budget_s={cfg.time_budget_s} must be a number of seconds greater than 0, or None "
                         f"for no time budget")
    if cfg.num_workers < 0:
        raise ValueError(f"num_workers={cfg.num_workers}: give 0 (load in the training process) or more")
    if cfg.weight_decay < 0 or cfg.warmup_epochs < 0:
        raise ValueError(f"weight_decay={cfg.weight_decay} and warmup_epochs={cfg.warmup_epochs} must be at least 0")
    for key, value in cfg.extra.items():
        _check_knob_range(key, value)


def _check_field_types(cfg: Config):
    """Each field holds what its annotation says (``lr="abc"`` from ``--set`` or a parameters cell stops here, with
    its name, before a comparison fails deep inside); ``None`` only where the annotation allows it."""
    import numbers

    kinds = {"int": numbers.Integral, "float": numbers.Real, "str": str}  # numpy's numbers count too
    words = {"int": "a whole number", "float": "a number", "str": "a string"}
    for f in dataclasses.fields(Config):
        if f.name in ("extra", "recipe"):
            continue
        kind, _, optional = f.type.partition(" | ")
        value = getattr(cfg, f.name)
        if value is None and optional == "None":
            continue
        if kind in kinds and (isinstance(value, bool) or not isinstance(value, kinds[kind])):
            raise ValueError(f"{f.name}={value!r} must be {words[kind]}{' or None' if optional else ''}")


def _check_knob_range(key: str, value):
    """A method knob outside its valid range is an error before anything trains: temperatures and learning rates
    above 0, momenta in [0, 1], mask ratios in (0, 1), weight decays at least 0, widths and feature sizes at least 1
    (a tuple: each of its values)."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return  # a name, a grid, a flag: not a range
    name = key.lower()
    if name.endswith(("temperature", "temperatures", "_temp", "_lr")):
        bad, valid = [v for v in values if not v > 0], "greater than 0"
    elif "momentum" in name:
        bad, valid = [v for v in values if not 0 <= v <= 1], "between 0 and 1"
    elif name.endswith("mask_ratio"):
        bad, valid = [v for v in values if not 0 < v < 1], "between 0 and 1 (exclusive)"
    elif name.endswith("weight_decay"):
        bad, valid = [v for v in values if not v >= 0], "at least 0"
    elif name.endswith(("width", "_dim")):  # channels and feature sizes (width=0 would fail in the first step)
        bad, valid = [v for v in values if not v >= 1], "at least 1"
    else:
        return
    if bad:
        raise ValueError(f"{key}={value!r} is out of range: it must be {valid}")


def resolve_device(device: str = "auto"):
    """"auto" -> the best device here; "cuda"/"mps" where there is none -> a clear error.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)} (or 'cuda:N')")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but this machine has no CUDA GPU that torch can use; "
                           f"set DEVICE = 'cpu' in a notebook, --device cpu in the shell (or 'auto' to pick the best "
                           f"device present)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device='mps' but Apple's Metal backend is not available here; "
                           "set DEVICE = 'cpu' in a notebook, --device cpu in the shell (or 'auto')")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` torch threads (None: as now), and give back the count it found.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)

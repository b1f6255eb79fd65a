"""Checkpoints that survive interruptions: atomic writes, safe loading, clear mismatch errors.

A checkpoint holds everything a run needs to continue exactly where it stopped: model,
optimizer and scheduler states, the step and epoch, the RNG states (torch, CUDA, Python) and
the config. ``save_checkpoint`` writes it atomically (temporary file, fsync, rename), so a
crash or a full disk while saving leaves the previous checkpoint intact. ``load_checkpoint``
uses ``torch.load(weights_only=True)``: a file with pickled code is refused, not executed.

>>> import tempfile, torch
>>> folder = tempfile.mkdtemp()
>>> model = torch.nn.Linear(2, 2)
>>> path = save_checkpoint(folder, model=model, epoch=1, step=10, config={"method": "demo"})
>>> path.name
'epoch-0001.pt'
>>> load_checkpoint(path, model=model)["step"]
10
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
from pathlib import Path

import torch

_NAME = re.compile(r"^epoch-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (corrupt, unsafe, or from another model); the message says why."""


def rng_state() -> dict:
    """This process's random state (torch CPU, CUDA if present, Python's ``random``), for a checkpoint.

    ``train`` takes it at the start of every step, so a run interrupted mid-step is saved as it was
    before that step and resumes with exactly the random crops it would have drawn.
    """
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore a state from ``rng_state`` (what ``load_checkpoint(restore_rng=True)`` does)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(state: dict, path: Path, kept: str) -> None:
    """torch.save ``state`` to ``path`` atomically: temporary file, fsync, rename, fsync the folder.

    Readers see the old file or the new one, never half of one; a full disk raises CheckpointError
    saying what was kept (``kept``).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CheckpointError(f"could not write {path} ({e.strerror or e}); {kept}. Free disk space or "
                                  f"choose another folder.") from e
        raise


def checkpoints_in(folder: str | Path) -> list[Path]:
    """The checkpoints in ``folder``, oldest first (by epoch)."""
    folder = Path(folder)
    found = [(int(m.group(1)), p) for p in folder.glob("epoch-*.pt") if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(folder: str | Path, *, model, optimizer=None, scheduler=None, epoch: int = 0, step: int = 0,
                    config: dict | None = None, extra: dict | None = None, keep_last: int | None = 3,
                    rng: dict | None = None) -> Path:
    """Write ``folder/epoch-NNNN.pt`` atomically and keep only the ``keep_last`` newest (None: all).

    ``config`` should name what the weights belong to (method, backbone): loading into another
    model then fails with the mismatched keys and shapes. ``rng``: the random state to store
    (from ``rng_state()``; None: the current one). ``extra`` may hold tensors, numbers, strings
    and lists/dicts of them (what weights-only loading accepts).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "epoch": epoch, "step": step, "config": dict(config or {}),
             "rng": rng if rng is not None else rng_state(), "extra": dict(extra or {})}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    path = folder / f"epoch-{epoch:04d}.pt"
    _atomic_save(state, path, f"the previous checkpoints in {folder} are intact")
    if keep_last is not None:
        for old in checkpoints_in(folder)[:-keep_last]:
            if old != path:  # (a file of a later epoch left by another run never pushes out the one just written)
                old.unlink(missing_ok=True)
    return path


def _read(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "model" not in state:  # a tensor or dict that torch.save wrote elsewhere
            raise ValueError(f"it holds a {type(state).__name__} without the weights ('model') sslkit saves")
        return state
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} contains pickled objects or code that weights-only loading refuses; sslkit "
                              f"does not execute code from checkpoint files. Re-save it with "
                              f"sslkit.checkpoint.save_checkpoint ({str(e).splitlines()[0]})") from None
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated, empty or not a torch file at all (the unpickler then fails in many ways)
        others = [p.name for p in checkpoints_in(path.parent) if p != path]
        first = (str(e).splitlines() or [""])[0]
        raise CheckpointError(f"{path} is corrupt or truncated ({type(e).__name__}: {first}); "
                              f"other checkpoints in that folder: {others or 'none'}") from None


def _check_compatible(model, saved: dict, path: Path, config: dict):
    own = model.state_dict() if hasattr(model, "state_dict") else model  # a model, or the part of its state to check
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = [f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(saved)) if hasattr(saved[k], "shape") and saved[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        what = ", ".join(f"{k}={config[k]}" for k in ("method", "backbone") if k in config)
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatches " + "; ".join(shapes[:5]))
        raise CheckpointError(f"{path} was saved from another model{f' ({what})' if what else ''}: "
                              + "; ".join(parts) + ". Build the same method and backbone, or start a new run folder.")


def load_checkpoint(path: str | Path, model=None, optimizer=None, scheduler=None, restore_rng: bool = True) -> dict:
    """Read a checkpoint (weights only) and restore it into the given objects; returns the state dict.

    Raises ``CheckpointError`` for a corrupt, truncated or unsafe file, or for a model whose keys or
    shapes differ from the checkpoint's (naming them).
    """
    path = Path(path)
    state = _read(path)
    if model is not None:
        _check_compatible(model, state["model"], path, state.get("config", {}))
        model.load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    return state


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest checkpoint in ``folder`` that loads, or None; corrupt newer files are skipped."""
    for path in reversed(checkpoints_in(folder)):
        try:
            _read(path)
            return path
        except CheckpointError:
            continue
    return None


# ----------------------------------------------------------------------------------------------
# trained models shared between notebooks: notebook 02 saves its SimCLR backbone, notebooks 06,
# 07 and 09 load it when present instead of training again (load_or_train)


def model_path(name: str, profile: str, folder: str | Path = "checkpoints") -> Path:
    """Where ``save_model`` keeps model ``name`` trained at ``profile``: ``folder/<name>.<profile>.pt``."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"model name {name!r} may hold only letters, digits, '_', '-' and '.'")
    return Path(folder) / f"{name}.{profile}.pt"


def save_model(name: str, model, cfg, metrics: dict | None = None, folder: str | Path = "checkpoints", *,
               notebook: str | None = None) -> Path:
    """Save a trained ``model`` (e.g. a backbone) under ``name`` for later notebooks, atomically.

    ``cfg`` (a ``Config``) is stored with it, so ``load_model`` can refuse weights trained with
    another backbone or profile. ``metrics`` (e.g. {"knn": 0.71}) travel along for the reader. With
    ``notebook`` (the one saving), the settings its run changed from its defaults travel too, so a reader
    says when it loads a variant's weights (``load_or_train``).

    >>> import tempfile, torch, sslkit
    >>> folder, cfg = tempfile.mkdtemp(), sslkit.make_config("smoke")
    >>> save_model("demo", torch.nn.Linear(2, 2), cfg, {"knn": 0.5}, folder=folder).name
    'demo.smoke.pt'
    >>> load_model("demo", torch.nn.Linear(2, 2), cfg, folder=folder)["metrics"]
    {'knn': 0.5}
    >>> load_model("other", torch.nn.Linear(2, 2), cfg, folder=folder) is None
    True
    """
    return save_weights(model_path(name, cfg.profile, folder), model, cfg, metrics, notebook=notebook)


def save_weights(path: str | Path, model, cfg, metrics: dict | None = None, *, notebook: str | None = None) -> Path:
    """``save_model`` at a given ``path`` (``python -m sslkit.train`` saves its backbone so); atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from .config import _plain  # what weights-only loading reads back: numbers, strings and lists of them

    state = {"model": model.state_dict(), "config": {**cfg.to_dict(), "extra": {k: v for k, v in cfg.extra.items()
                                                                                 if _plain(v)}},
             "metrics": dict(metrics or {})}
    if notebook:
        from .config import changed_settings
        state.update(notebook=notebook, changed={k: list(v) for k, v in changed_settings(cfg, notebook).items()})
    _atomic_save(state, path, "a model saved there before is intact")
    return path


def load_backbone(path: str | Path):
    """The backbone saved at ``path``, rebuilt from the config saved with it: a ``save_weights`` or ``save_model``
    file, or a training checkpoint of a run folder (``epoch-NNNN.pt``: the method's backbone is taken from it).

    Returns ``(backbone, config, state)``: the module with its weights, the ``Config`` it was trained with, and the
    saved state (``metrics``). A file that is neither raises ``CheckpointError`` saying what it holds.
    """
    from .config import Config
    from .models import backbone_arguments, make_backbone

    path = Path(path)
    state = _read(path)
    saved, fields = state.get("config"), Config.__dataclass_fields__
    if not isinstance(saved, dict) or "backbone" not in saved:
        raise CheckpointError(f"{path} holds weights without the config of an sslkit training; give the "
                              f".backbone.pt file python -m sslkit.train writes, a checkpoint of its --run-dir, or a "
                              f"model notebook 02 or 04 saved in notebooks/checkpoints/")
    extra = saved["extra"] if isinstance(saved.get("extra"), dict) else {  # a run folder's flattened config
        k: v for k, v in saved.items() if k not in fields and k not in ("method", "world_size")}
    cfg = Config(**{k: v for k, v in saved.items() if k in fields and k != "extra"}, extra=extra)
    weights = state["model"]
    if any(k.startswith("backbone.") for k in weights):  # a training checkpoint holds the whole method
        weights = {k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")}
    backbone, _ = make_backbone(cfg.backbone, **backbone_arguments(cfg))
    _check_compatible(backbone, weights, path, saved)
    backbone.load_state_dict(weights)
    return backbone.eval(), cfg, state


def load_model(name: str, model, cfg, folder: str | Path = "checkpoints") -> dict | None:
    """Load the weights ``save_model`` saved under ``name`` at ``cfg.profile`` into ``model``.

    Returns the saved state (with ``config`` and ``metrics``), or None when there is no such file
    (the notebook then trains the model itself). A file from another architecture raises
    ``CheckpointError`` naming the mismatched keys; a corrupt one raises ``CheckpointError``.
    """
    path = model_path(name, cfg.profile, folder)
    if not path.exists():
        return None
    state = _read(path)
    _check_compatible(model, state["model"], path, state.get("config", {}))
    model.load_state_dict(state["model"])
    return state


OFF = ("train it here: USE_CHECKPOINTS = False in notebook 06, SSL_CHECKPOINT = None in 07 and 09 "
       "(load_or_train(..., use_checkpoint=False))")


def load_or_train(name: str, model, cfg, train_fn, use_checkpoint: bool = True, *, what: str | None = None,
                  folder: str | Path = "checkpoints"):
    """``model`` with the weights ``save_model`` saved under ``name`` when they are there and fit, else ``train_fn()``.

    The later notebooks start from an earlier one's model (notebook 02's SimCLR backbone, 04's ViT) and train their
    own only without it. This says which happened: where the weights came from and the metrics saved with them, or
    why they cannot be used (no file for ``cfg.profile``, another architecture, a corrupt file, ``use_checkpoint``
    False), and then calls ``train_fn()`` (no arguments; it returns the trained model, and reports its own run).
    A file that does not fit leaves ``model`` as it was. ``what`` names the model in the messages (default: ``name``).

    Returns ``(model, state)``: the loaded ``model`` and ``save_model``'s state (``config``, ``metrics``), or what
    ``train_fn()`` returned and None.

    >>> import tempfile, torch, sslkit
    >>> folder, cfg = tempfile.mkdtemp(), sslkit.make_config("smoke")
    >>> def train_fn():
    ...     print("  (training here)")
    ...     return torch.nn.Linear(2, 2)
    >>> net, state = load_or_train("demo", torch.nn.Linear(2, 2), cfg, train_fn, folder=folder)  # doctest: +ELLIPSIS
    demo: no checkpoint .../demo.smoke.pt for the smoke profile; training it here instead
      (training here)
    >>> _ = save_model("demo", net, cfg, {"knn": 0.51234}, folder=folder)
    >>> net, state = load_or_train("demo", torch.nn.Linear(2, 2), cfg, train_fn, folder=folder)  # doctest: +ELLIPSIS
    demo: loaded .../demo.smoke.pt (its metrics there: {'knn': 0.512})
    >>> state["metrics"]
    {'knn': 0.51234}
    """
    what = what or name
    path = model_path(name, cfg.profile, folder)
    state, why = None, "not loading checkpoints (use_checkpoint is off);"
    if use_checkpoint:
        try:
            state = load_model(name, model, cfg, folder)  # None when there is no file
            why = f"no checkpoint {path} for the {cfg.profile} profile;"
        except CheckpointError as e:  # another architecture (e.g. another WIDTH), or a corrupt file
            why = f"cannot use the checkpoint: {e}\n->"
    if state is not None:
        metrics = {k: round(v, 3) if isinstance(v, float) else v for k, v in state.get("metrics", {}).items()}
        print(f"{what}: loaded {path}" + (f" (its metrics there: {metrics})" if metrics else ""))
        saved_seed = state.get("config", {}).get("seed")
        if saved_seed is not None and saved_seed != cfg.seed:  # numbers then differ from a run that trains it here
            print(f"{what}: trained with seed {saved_seed}, this run's seed is {cfg.seed}; to train it with this seed, "
                  f"delete {path} or {OFF}")
        if state.get("changed"):  # a variant of the saving notebook (e.g. one of its "what to try next")
            changed = ", ".join(f"{k}={v!r} (default {d!r})" for k, (v, d) in state["changed"].items())
            print(f"{what}: {state.get('notebook')} saved it from a run with changed settings: {changed}; the numbers "
                  f"below then differ from the lesson's text. For the lesson's weights, run {state.get('notebook')} "
                  f"again with its defaults, or {OFF}")
        return model, state
    print(f"{what}: {why} training it here instead")
    return train_fn(), None

"""Replay: the trainings of a recorded lesson run, loaded instead of trained (a notebook's ``REPLAY`` switch).

A lesson's trainings take most of its time (notebook 03: five methods of about five minutes each on 2 CPU cores).
With ``REPLAY = True`` a notebook loads, for each training, the weights and the training history that the recorded
lesson run produced (committed under ``results/replay/``, each file checked against the sha256 in its
``MANIFEST.json``), says so, shows the recorded curves, and computes every evaluation on those weights here: a class
runs the notebook in minutes and discusses it, and runs the trainings as homework (``REPLAY = False``).
``REPLAY = ["byol", "simsiam"]`` replays the trainings it names (or matches: ``"simclr_*"``) and trains the others
here: a class trains the one method it discusses live (a few minutes) and replays the rest. That is the default of
notebooks 02 and 03, so that each fits a class period; a training it names trains here all the same when the recorded
run cannot stand for it (another profile, seed or knob), and says so. ``REPLAY = "record"`` trains and writes the
files (what the maintainers do when they record a lesson run).

The random state after a training is stored with it and restored on replay, so the cells after a replayed training
see what they saw after the real one: the evaluations give the recorded numbers (``tests/test_replay.py``).

>>> import tempfile, torch, sslkit
>>> from sslkit.train import History
>>> folder, cfg = tempfile.mkdtemp(), sslkit.make_config("smoke")
>>> def fit(net):  # stands for a notebook's training
...     net.weight.data.fill_(0.5)
...     return History(losses=[1.0, 0.5], steps=2, total_steps=2, epochs=1.0, wall_time_s=3.0)
>>> net = torch.nn.Linear(2, 2)
>>> _ = train_or_replay("demo", "linear", net, cfg, lambda: fit(net), "record", keep=None,
...                     folder=folder)  # doctest: +ELLIPSIS
linear: recorded the replay .../demo.linear.smoke.pt
>>> other = torch.nn.Linear(2, 2)
>>> history = train_or_replay("demo", "linear", other, cfg, lambda: fit(other), True, keep=None,
...                           folder=folder)  # doctest: +ELLIPSIS
linear: replayed the recorded run (demo.linear.smoke.pt, sha256 checked): 2 steps, 1 epochs, 3 s of training ...
>>> history.replayed, history.losses, bool((other.weight == 0.5).all())
(True, [1.0, 0.5], True)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

REPLAY_DIR = Path(__file__).resolve().parent.parent / "results" / "replay"  # the repository's recorded trainings
ENV_DIR = "SSLKIT_REPLAY_DIR"  # another folder for them (the tests record smoke runs into a temporary one)
MANIFEST = "MANIFEST.json"  # file name -> sha256 and size of every replay file in a folder
MODES = (False, True, "record")  # or a list of training names: replay those, train the others
_NOT_COMPARED = ("device", "num_workers")  # where a run happens, not what it trains


class ReplayError(ValueError):
    """A replay cannot be used (missing, changed on disk, or recorded with other values); the message says why."""


def check_mode(replay) -> bool | str | tuple[str, ...]:
    """``replay`` if it is one of ``MODES`` (a list or tuple of training names or ``fnmatch`` patterns: as a tuple),
    else a ValueError saying which values there are.

    >>> check_mode(None), check_mode(True), check_mode(["byol", "dino"])
    (False, True, ('byol', 'dino'))
    """
    if replay is None:
        return False
    if isinstance(replay, (list, tuple)):
        if replay and all(isinstance(n, str) and n for n in replay):
            return tuple(replay)
    elif replay in MODES and (isinstance(replay, bool) or not isinstance(replay, int)):  # 1 == True, but not a bool
        return replay
    raise ValueError(f"REPLAY={replay!r}: choose False (train), True (load the recorded lesson run's trainings), "
                     f"a list of their names (replay those, train the others, e.g. [\"byol\", \"dino\"] or "
                     f"[\"moco\", \"simclr_*\"]) or "
                     f"\"record\" (train and save them as the replay)")


def recorded_names(notebook: str, profile: str, folder: str | Path | None = None) -> list[str]:
    """The names of the trainings of ``notebook`` recorded at ``profile`` (what a ``REPLAY`` list can name)."""
    prefix, suffix = f"{notebook}.", f".{profile}.pt"
    return sorted(p.name[len(prefix):-len(suffix)] for p in _folder(folder).glob(f"{prefix}*{suffix}"))


def replay_path(notebook: str, name: str, profile: str, folder: str | Path | None = None) -> Path:
    """Where the replay of training ``name`` of ``notebook`` at ``profile`` lives: ``folder``, else
    ``$SSLKIT_REPLAY_DIR``, else the repository's ``results/replay/``."""
    return _folder(folder) / f"{notebook}.{name}.{profile}.pt"


def _folder(folder: str | Path | None) -> Path:
    return Path(folder or os.environ.get(ENV_DIR) or REPLAY_DIR)


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _comparable(cfg) -> dict:
    """``cfg``'s values as JSON would hold them (tuples as lists), without where the run happens."""
    values = json.loads(json.dumps(cfg.to_dict(), default=str))
    return {k: v for k, v in values.items() if k not in _NOT_COMPARED}


def _differences(saved: dict, now: dict) -> list[str]:
    flat_saved = {**{k: v for k, v in saved.items() if k != "extra"}, **saved.get("extra", {})}
    flat_now = {**{k: v for k, v in now.items() if k != "extra"}, **now.get("extra", {})}
    return [f"{k}: recorded {flat_saved.get(k)!r}, yours {flat_now.get(k)!r}"
            for k in sorted(set(flat_saved) | set(flat_now)) if flat_saved.get(k) != flat_now.get(k)]


def _kept(state: dict, keep) -> dict:
    return {k: v for k, v in state.items() if keep is None or k.split(".")[0] in keep}


def _register(replay: Path) -> None:
    """Write ``replay``'s sha256 and size into its folder's MANIFEST.json (atomically)."""
    folder, path = replay.parent, replay.parent / MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest[replay.name] = {"sha256": sha256(replay), "bytes": replay.stat().st_size}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{MANIFEST}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(dict(sorted(manifest.items())), f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def record(notebook: str, name: str, model, cfg, history, *, keep=("backbone",), log: dict | None = None,
           folder: str | Path | None = None) -> Path:
    """Save what ``train_or_replay`` replays: ``model``'s weights under the prefixes ``keep`` (None: all), the
    ``History``, ``log`` (a JSON-able dict a callback filled) and the random state now; its sha256 goes into the
    folder's ``MANIFEST.json``."""
    from .checkpoint import _atomic_save, rng_state

    path = replay_path(notebook, name, cfg.profile, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": _kept(model.state_dict(), keep), "keep": list(keep) if keep is not None else None,
             "history": json.dumps(dataclasses.asdict(history)), "log": json.dumps(log or {}),
             "config": json.dumps(_comparable(cfg)), "rng": rng_state(), "torch": str(torch.__version__)}
    _atomic_save(state, path, "the replay saved there before is intact")
    _register(path)
    return path


def retime(notebook: str, profile: str, results_path: str | Path, folder: str | Path | None = None) -> list[str]:
    """Give the replays of ``notebook`` at ``profile`` the clock readings of the recorded run in ``results_path``.

    A lesson run recorded alone on 2 cores gives the times a notebook quotes; its trainings can be saved as replays
    later by ``REPLAY = "record"`` (same code, same seed: the same weights and losses bit for bit, which the maintainer
    checks metric by metric against that results file), on a machine busy with other work, so their clocks read
    more. This sets each replay's ``wall_time_s`` (and ``images_per_s``) to the recorded run's ``train_s_<name>``,
    after checking that the run took the same steps; returns the names it retimed.
    """
    from .checkpoint import _atomic_save, _read

    metrics = json.loads(Path(results_path).read_text())["metrics"]
    folder = _folder(folder)
    done = []
    for path in sorted(folder.glob(f"{notebook}.*.{profile}.pt")):
        name = path.name[len(notebook) + 1:-len(f".{profile}.pt")]
        state = _read(path)
        history = json.loads(state["history"])
        if metrics.get(f"steps_{name}") != history["steps"]:
            raise ReplayError(f"{name}: the replay took {history['steps']} steps, {results_path} says "
                              f"{metrics.get(f'steps_{name}')}: not the same run")
        wall = metrics[f"train_s_{name}"]
        history["images_per_s"] *= history["wall_time_s"] / wall
        history["wall_time_s"] = wall
        state["history"] = json.dumps(history)
        _atomic_save(state, path, "the replay saved there before is intact")
        _register(path)
        done.append(name)
    return done


def load(notebook: str, name: str, model, cfg, *, log: dict | None = None, folder: str | Path | None = None):
    """Load the replay of training ``name`` into ``model`` (and ``log``), restore the random state after it, and
    return its ``History`` (``replayed`` True). ``ReplayError`` when the file is missing, does not match its sha256,
    was recorded with other values than ``cfg``'s, or holds weights of another model."""
    from .checkpoint import CheckpointError, _check_compatible, _read, set_rng_state
    from .train import History

    path = replay_path(notebook, name, cfg.profile, folder)
    fix = "or set REPLAY = False to train it here"
    if not path.exists():
        raise ReplayError(f"{name}: no recorded training to replay at the {cfg.profile} profile ({path} is missing); "
                          f"the repository holds the lesson profile's. Use PROFILE = \"lesson\", {fix}")
    manifest_path = path.parent / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    expected = manifest.get(path.name, {}).get("sha256")
    if expected is None:
        raise ReplayError(f"{name}: {path.name} is not listed in {manifest_path}, so it cannot be checked; record it "
                          f"again with REPLAY = \"record\", {fix}")
    if sha256(path) != expected:
        raise ReplayError(f"{name}: {path} does not match the sha256 in {manifest_path} (it was changed or damaged); "
                          f"restore it (git checkout -- {path.parent.name}/{path.name} in its folder), {fix}")
    try:
        state = _read(path)
    except CheckpointError as e:
        raise ReplayError(f"{name}: {e}; {fix}") from None
    differences = _differences(json.loads(state["config"]), _comparable(cfg))
    if differences:
        raise ReplayError(f"{name}: the recorded run was trained with other values than yours, so its weights would "
                          f"not show what your settings train. Differences: {'; '.join(differences[:6])}"
                          f"{' ...' if len(differences) > 6 else ''}. Set those back to None, {fix}")
    keep = state["keep"]
    try:
        _check_compatible(_kept(model.state_dict(), keep), state["model"], path, json.loads(state["config"]))
    except CheckpointError as e:
        raise ReplayError(f"{name}: {e}") from None
    model.load_state_dict(state["model"], strict=keep is None)
    if log is not None:
        log.clear()
        log.update(json.loads(state["log"]))
    set_rng_state(state["rng"])
    return History(**{**json.loads(state["history"]), "replayed": True})


def _named(notebook: str, name: str, patterns: tuple[str, ...], cfg, folder) -> bool:
    """Whether a ``REPLAY`` list replays training ``name``: it names it (or a pattern matches it) and the recorded run
    was trained with ``cfg``'s values. At a profile with no recorded training, or when the recording had other values
    (another seed, a changed knob), the training runs here and a line says why: the list is a notebook's default, so
    a learner who changes a knob gets what that knob trains. A name that matches none of the recorded trainings at a
    profile that has some is a ``ReplayError`` (a typo would otherwise train for minutes unnoticed)."""
    known = recorded_names(notebook, cfg.profile, folder)
    if known:
        unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in known)]
        if unknown:
            raise ReplayError(f"REPLAY names {', '.join(map(repr, unknown))}, but {notebook} has no recorded training "
                              f"of that name at the {cfg.profile} profile; it has: {', '.join(known)}")
    if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
        return False
    if name not in known:
        print(f"{name}: REPLAY names it, but no run of it is recorded at the {cfg.profile} profile (the repository "
              f"holds the lesson profile's): training it here")
        return False
    from .checkpoint import CheckpointError, _read

    try:
        recorded = json.loads(_read(replay_path(notebook, name, cfg.profile, folder))["config"])
    except (CheckpointError, KeyError, ValueError):
        return True  # a damaged file: load() says what is wrong and how to restore it
    differences = _differences(recorded, _comparable(cfg))
    if differences:
        print(f"{name}: REPLAY names it, but its recorded run was trained with other values than yours "
              f"({'; '.join(differences[:3])}{' ...' if len(differences) > 3 else ''}): training it here")
        return False
    return True


def train_or_replay(notebook: str, name: str, model, cfg, train_fn, replay=False, *, keep=("backbone",),
                    log: dict | None = None, folder: str | Path | None = None):
    """``train_fn()`` (it trains ``model`` and returns its ``History``), or the recorded run's weights and history.

    ``replay``: False trains; True loads the replay of ``name`` (``load``) and prints where it came from; a list of
    names or patterns loads the replay when it names ``name`` and the recording fits ``cfg``, and trains otherwise
    (``_named``); "record" trains, then saves the replay (``record``). ``keep``: the top-level parts of
    ``model`` a replay holds (the backbone is what the evaluations read; add the heads a later cell uses). ``log``: a
    dict a callback fills while training (saved with the replay, filled from it).
    """
    replay = check_mode(replay)
    if isinstance(replay, tuple):  # the named trainings replay, the others train
        replay = _named(notebook, name, replay, cfg, folder)
    if replay is True:
        from .callbacks import LivePlot

        history = load(notebook, name, model, cfg, log=log, folder=folder)
        knn = f", its live kNN monitor read {history.knn[-1]:.3f} at the end" if history.knn else ""
        print(f"{name}: replayed the recorded run ({replay_path(notebook, name, cfg.profile, folder).name}, sha256 "
              f"checked): {history.steps} steps, {history.epochs:g} epochs, {history.wall_time_s:.0f} s of training "
              f"where it was recorded{knn}; the evaluations run here on its weights")
        LivePlot().on_train_end(history)  # its loss curve, as the live plot ends a training in a notebook
        return history
    history = train_fn()
    if replay == "record":
        path = record(notebook, name, model, cfg, history, keep=keep, log=log, folder=folder)
        print(f"{name}: recorded the replay {path}")
    return history

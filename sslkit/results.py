"""Results files: every notebook run records what it measured, with versions and hardware.

A results file is JSON with the keys ``notebook``, ``profile``, ``config``, ``versions``,
``hardware``, ``wall_time_s``, ``metrics`` (a flat mapping of metric name to number) and ``complete``.
Tests, sweeps and the README read these files, never scraped cell output. The file is rewritten
(atomically) after every ``record``, so a run that stops half-way keeps what it measured; it says
``"complete": false`` until the run's last step calls ``Results.save()`` (every notebook's last
cell, the CLI after its evaluation), so a run that failed, or one still running, never leaves a file
that looks finished.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "demo.json")
>>> res = Results("00_welcome", {"profile": "smoke"}, path)
>>> res.record("knn_raw_pixels", 0.16)
>>> load_results(path)["metrics"], is_complete(load_results(path))
({'knn_raw_pixels': 0.16}, False)
>>> _ = res.save()  # the run is done
>>> is_complete(load_results(path))
True
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

REQUIRED_KEYS = ("notebook", "profile", "config", "versions", "hardware", "wall_time_s", "metrics")


def default_results_path(notebook: str, profile: str) -> Path:
    """Where a notebook's results go when ``RESULTS_PATH`` is None: results/<notebook>.<profile>.json."""
    return Path("results") / f"{notebook}.{profile}.json"


def versions() -> dict:
    """Versions of python and the libraries whose behaviour the numbers depend on."""
    import torch
    import torchvision

    from . import __version__

    try:
        from importlib.metadata import version
        lightly_version = version("lightly")
    except Exception:  # noqa: BLE001 - not installed
        lightly_version = None
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "lightly": lightly_version, "sslkit": __version__}


def hardware() -> dict:
    """The CPU (model, cores, torch threads, the vector instructions torch's kernels use) and the GPU if there is
    one. Two CPUs of one name can differ in speed severalfold ("AMD EPYC" with AVX-512 or with AVX2 only): a run's
    time compares with another's only where ``cpu_capability`` agrees too."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
               "count": torch.cuda.device_count()}
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        gpu = {"name": "Apple MPS"}
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # e.g. AVX512, AVX2
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "gpu": gpu}


def check_writable(path: str | Path) -> Path:
    """Fail now, before any training, if ``path`` cannot be written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-test-", delete=True):
            pass
    except OSError as e:
        raise PermissionError(f"RESULTS_PATH={str(path)!r} is not writable ({e.strerror or e}); set RESULTS_PATH "
                              f"to a file in a folder you can write, e.g. 'results/{path.name}'") from e
    if path.is_dir():
        raise IsADirectoryError(f"RESULTS_PATH={str(path)!r} is a folder; give a file name such as "
                                f"'{path / 'results.json'}'")
    return path


def _number(name: str, value) -> float | int:
    if hasattr(value, "item"):  # a 0-d tensor or numpy scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"metric {name!r} is {value}: the run that produced it diverged; re-run it with a "
                         f"lower learning rate (or fp32) before recording")
    return value


class Results:
    """The results file of one notebook run.

    Args:
        notebook: the notebook's name, e.g. "01_pretext".
        config: the run's config (a ``Config`` or a dict).
        path: where to write (None: ``default_results_path``). Checked for writability now.
    """

    def __init__(self, notebook: str, config, path: str | Path | None = None):
        cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        self.notebook, self.config = notebook, cfg
        self.path = check_writable(path if path is not None else default_results_path(notebook, cfg.get("profile", "lesson")))
        self.metrics: dict[str, float] = {}
        self.cut_short: dict[str, str] = {}
        self._start = time.perf_counter()
        self._versions, self._hardware = versions(), hardware()
        self.complete = False  # True once the run's last step calls save()
        _keep_reference(self.path)  # recording a reference run: its notebook compares with the one it replaces
        self._write()

    def record(self, name: str, value) -> None:
        """Record one metric and rewrite the file (still marked unfinished)."""
        self.metrics[name] = _number(name, value)
        self._write()

    def update(self, metrics: dict) -> None:
        """Record several metrics at once (e.g. the dict an evaluation returns)."""
        for name, value in metrics.items():
            self.metrics[name] = _number(name, value)
        self._write()

    def record_training(self, name: str, history, verbose: bool = True) -> None:
        """Record what training run ``name`` did: ``train_s_<name>``, ``steps_<name>``, ``epochs_<name>``, and
        ``replayed_<name>`` = 1 when its weights came from the recorded run (``sslkit.replay``).

        A run that a time budget (``TIME_BUDGET_S``) or a time limit stopped before its planned steps is marked:
        ``cut_short_<name>`` = 1 and, under ``"cut_short"`` in the file, what that did; printed too. Its numbers
        then depend on the machine's speed and are not the lesson's (which plans every run in epochs).

        >>> import tempfile, os, types
        >>> res = Results("demo", {"profile": "smoke"}, os.path.join(tempfile.mkdtemp(), "r.json"))
        >>> h = types.SimpleNamespace(wall_time_s=3.0, steps=5, total_steps=10, epochs=0.5,
        ...                           stop_reason="time budget", message="time budget of 3 s reached after 5 of 10 steps")
        >>> res.record_training("simclr", h)
        simclr was cut short: time budget of 3 s reached after 5 of 10 steps. Its numbers are below what its planned 10 steps give, and depend on this machine's speed (set TIME_BUDGET_S = None to train the plan)
        >>> res.metrics["cut_short_simclr"], res.metrics["steps_simclr"]
        (1, 5)
        """
        self.update({f"train_s_{name}": history.wall_time_s, f"steps_{name}": history.steps,
                     f"epochs_{name}": history.epochs})
        if getattr(history, "replayed", False):  # loaded from the recorded run (REPLAY): its training, not this one's
            self.record(f"replayed_{name}", 1)
        self.mark_cut_short(name, history, verbose)

    def mark_cut_short(self, name: str, history, verbose: bool = True, metric: str | None = None) -> bool:
        """Mark training run ``name`` when it stopped before its planned steps (a time budget or limit, or a step
        cap like the shell's ``--max-steps``): ``"cut_short"`` in the file says what that did, and the metric
        ``metric`` (default ``cut_short_<name>``) is 1. Returns whether it was cut short."""
        reason = getattr(history, "stop_reason", None)
        if reason in ("time budget", "time limit"):
            note = (f"{name} was cut short: {history.message}. Its numbers are below what its planned "
                    f"{history.total_steps} steps give, and depend on this machine's speed (set TIME_BUDGET_S = None "
                    f"to train the plan)")
        elif reason == "max steps" and history.steps < history.total_steps:
            note = (f"{name} was cut short: {history.message}. Its numbers are those of {history.steps} of its "
                    f"planned {history.total_steps} steps")
        else:
            return False
        self.cut_short[name] = note
        self.record(metric or f"cut_short_{name}", 1)
        if verbose:
            print(note)
        return True

    def as_dict(self) -> dict:
        out = {"notebook": self.notebook, "profile": self.config.get("profile"), "config": self.config,
               "versions": self._versions, "hardware": self._hardware,
               "wall_time_s": round(time.perf_counter() - self._start, 2), "metrics": dict(self.metrics),
               "complete": self.complete}
        if self.cut_short:  # runs a time budget stopped before their planned steps (record_training)
            out["cut_short"] = dict(self.cut_short)
        return out

    def save(self) -> Path:
        """The run is done: write the file marked ``"complete": true`` (with the wall time so far) and return its
        path. A notebook's last cell calls it; a run that stops before never reaches it."""
        self.complete = True
        return self._write()

    def _write(self) -> Path:
        """Write the file atomically (temporary file, fsync, rename)."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.as_dict(), f, indent=2, default=str)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path

    def __repr__(self):
        return f"Results({self.notebook!r}, path={str(self.path)!r}, metrics={self.metrics})"


def is_complete(data: dict) -> bool:
    """Whether a results file (as ``load_results`` returns it) is a finished run's: False while its run is still
    going or when the run stopped before its end. Files written before sslkit marked this count as finished."""
    return data.get("complete", True) is not False


def load_results(path: str | Path) -> dict:
    """Read a results file back, checking that it has every key and finite numeric metrics."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no results file at {path}; run the notebook (or script) that writes it") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a valid results file ({e})") from None
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}; it was not written by sslkit.Results")
    for name, value in data["metrics"].items():
        _number(name, value)
    return data


RECORDED = Path(__file__).resolve().parents[1] / "results"  # the committed reference runs (a source checkout)
_REPLACED: dict[Path, dict] = {}  # reference files a run of this process is rewriting: their metrics before it


def _keep_reference(path: Path) -> None:
    """A run that writes a committed reference file (re-recording a lesson) keeps the metrics it replaces, so that
    ``recorded_metrics`` goes on giving the previous reference run, not the half-written new one."""
    path = Path(path).resolve()
    if path.parent == RECORDED.resolve() and path.is_file() and path not in _REPLACED:
        try:
            _REPLACED[path] = load_results(path)["metrics"]
        except (OSError, ValueError):
            pass  # not a results file: nothing to compare with


def recorded_metrics(notebook: str, profile: str = "lesson") -> dict | None:
    """The metrics of the committed reference run of ``notebook`` (``results/<notebook>.<profile>.json`` of
    the repository), or None when there is none: what a notebook's "what you just saw" cells compare with.
    While this process re-records that file, the run it replaces; while another process does (the file is not
    complete yet), None."""
    path = RECORDED / f"{notebook}.{profile}.json"
    if path.resolve() in _REPLACED:
        return dict(_REPLACED[path.resolve()])
    if not path.is_file():
        return None
    data = load_results(path)
    return data["metrics"] if is_complete(data) else None


def recorded_seeds(notebook: str, profile: str = "lesson") -> dict[int, dict]:
    """The metrics of every committed run of ``notebook`` at ``profile``, by seed: the reference run
    (``results/<notebook>.<profile>.json``, seed 0) and the same run with other seeds (``results/seeds/
    <notebook>.<profile>.seed<N>.json``), finished runs only. Empty when the repository has none."""
    reference = recorded_metrics(notebook, profile)
    runs = {} if reference is None else {0: reference}  # the reference runs are recorded with seed 0
    for path in sorted((RECORDED / "seeds").glob(f"{notebook}.{profile}.seed*.json")):
        r = load_results(path)
        if not is_complete(r):  # being recorded, or a recording that stopped: not a run to quote
            continue
        runs[int(r["config"]["seed"])] = r["metrics"]
    return dict(sorted(runs.items()))


def _seed_range(runs: dict[int, float], digits: int) -> tuple[str, str]:
    seeds = sorted(runs)
    named = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))
    return f"seeds {named}", f"{min(runs.values()):.{digits}f} to {max(runs.values()):.{digits}f}"


def seed_spread(notebook: str, keys: dict[str, str], profile: str = "lesson", digits: int = 3) -> str:
    """How the committed lesson run of ``notebook`` varies with the seed, for a notebook's "what you just saw" cells:
    one line with the range of each metric in ``keys`` (label -> metric name) over the recorded seeds, e.g.
    ``"the lesson run on seeds 0-2: rotation kNN 0.629 to 0.651, jigsaw kNN 0.303 to 0.333"``. "" when fewer than
    two recorded runs hold a metric (then there is no spread to show).

    >>> seed_spread("no_such_notebook", {"kNN": "knn"})
    ''
    """
    runs = recorded_seeds(notebook, profile)
    parts, named = [], ""
    for label, key in keys.items():
        values = {seed: m[key] for seed, m in runs.items() if key in m}
        if len(values) < 2:
            return ""
        named, span = _seed_range(values, digits)
        parts.append(f"{label} {span}")
    return f"the lesson run on {named}: " + ", ".join(parts) if parts else ""


def environment_report() -> str:
    """A few lines on what this kernel runs on: versions, device, CPU threads, GPU if any."""
    from .config import resolve_device

    v, h = versions(), hardware()
    gpu = h["gpu"]
    lines = [f"sslkit {v['sslkit']} | python {v['python']} | torch {v['torch']} | torchvision {v['torchvision']}"
             f" | lightly {v['lightly']}",
             f"CPU: {h['cpu']} ({h['cpu_cores']} cores, torch uses {h['torch_threads']} threads)",
             f"GPU: {gpu['name'] + (' (%s GiB)' % gpu['memory_gib'] if 'memory_gib' in gpu else '') if gpu else 'none'}",
             f"device='auto' picks: {resolve_device('auto')}"]
    return "\n".join(lines)

"""Parameter sweeps over a notebook: every combination is one papermill run with its own files.

``sweep(notebook, grid, out_dir)`` runs the notebook once per combination of the grid's values.
Each run writes ``out_dir/<run>.ipynb`` (the executed notebook) and ``out_dir/<run>.json`` (its
results file). A run whose results file already exists is not run again, so an interrupted sweep
finishes the missing runs when called again; a failed run is reported and the others go on. A
finished run made with other parameters (a changed ``fixed`` value: another profile, width, ...)
is not reused: it runs again, and its earlier files move to ``out_dir/replaced/`` (nothing lost).
``collect(out_dir)`` reads the results files back into rows for a table or a plot.

What one run does is up to the notebook. ``experiment_notebook(path)`` writes a small one whose
parameters cell names a method, a dataset and the usual knobs, and whose code is one call of
``run_experiment``: train the method on the dataset's unlabeled split (built as
``python -m sslkit.train`` builds it, ``sslkit.recipes.build``), evaluate the backbone with kNN and
a linear probe, record both. Notebook 08 runs the same function in-process, then sweeps that
notebook.

>>> grid_runs({"METHOD": ["simclr", "byol"], "SEED": [0, 1]})[:2]
[{'METHOD': 'simclr', 'SEED': 0}, {'METHOD': 'simclr', 'SEED': 1}]
>>> run_name({"METHOD": "simclr", "LR": 0.003})
'METHOD=simclr,LR=0.003'
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .experiment import EXPERIMENT_PARAMETERS, experiment_notebook, run_experiment  # noqa: F401 (a sweep's
from .nbtools import notebook_parameters, run_notebook  # experiment, named here where users look for it)
from .results import load_results


def grid_runs(grid: dict) -> list[dict]:
    """Every combination of the grid's values, in order (the last name varies fastest)."""
    names = list(grid)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in grid.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


_UNSAFE = re.compile(r"[^A-Za-z0-9=,._+-]")  # characters a run's file name does not keep
_MAX_PLAIN = 200  # characters of a name without a hash: with ".json.partial" and a dot, under 255 bytes


def run_name(params: dict) -> str:
    """A file-name-safe name for one run; distinct parameters never get the same name.

    Plain values (numbers, True, False, None and text of letters, digits and ``._+-=`` that does not read as one of
    those) are written as they are: ``NAME=value`` joined by commas. Otherwise (a tuple, text with a space or a
    comma, text such as ``"0.1"``, ...) the unsafe characters become ``_`` and the name ends in ``~`` and a short hash
    of the parameters, so that values alike once sanitised (``"a b"`` and ``"a_b"``) never share a file. ``collect``
    reads the values back from each run's results file, not from its name.

    >>> run_name({"METHOD": "simclr", "NUM_EPOCHS": 2})
    'METHOD=simclr,NUM_EPOCHS=2'
    >>> run_name({"CROP_SCALE": (0.5, 1.0)})
    'CROP_SCALE=_0.5,_1.0_~d60a22f6'
    """
    values = _as_passed(params)
    text = ",".join(f"{k}={v}" for k, v in values.items())
    plain = _UNSAFE.sub("_", text) == text and len(text) <= _MAX_PLAIN and _same(_parse_name(text), values)
    if plain:
        return text
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', text)[:_MAX_PLAIN]}~{digest}"


def _as_passed(params: dict) -> dict:
    """The parameters as papermill passes them to a notebook and a results file keeps them: JSON (tuples become
    lists, other objects their text)."""
    return json.loads(json.dumps(params, default=str))


def _same(a, b) -> bool:
    """Equal and of the same types (1, 1.0 and True are equal in Python, and are different parameters)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _parse_value(text: str):
    """A value as a plain run name writes it: an int, a float, True, False or None, else the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def _parse_name(name: str) -> dict:
    """The parameters a plain run name spells (a hashed name's values are sanitised: read its results file)."""
    parts = name.split("~", 1)[0].split(",")
    return {k: _parse_value(v) for k, v in (part.split("=", 1) for part in parts if "=" in part)}


def _as_lists(value):
    """Tuples as lists, in dicts and lists too: papermill writes a tuple into a notebook as its text, a list as a
    list."""
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return [_as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def _as_tuples(value):
    """Lists (a tuple once papermill and JSON passed it) back to tuples: a table's values that plot and set take."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


@dataclass
class SweepReport:
    """What a sweep did: runs done now, runs skipped (already done), runs that failed (with why)."""

    done: list = field(default_factory=list)  # run names finished by this call
    skipped: list = field(default_factory=list)  # run names whose results file was already there
    failed: dict = field(default_factory=dict)  # run name -> the error, one line
    pending: list = field(default_factory=list)  # run names left for a later call (``limit``)
    replaced: list = field(default_factory=list)  # run names re-run because their earlier run had other parameters

    def __repr__(self):
        more = f", pending={len(self.pending)}" if self.pending else ""
        more += f", replaced={len(self.replaced)}" if self.replaced else ""
        return (f"SweepReport(done={len(self.done)}, skipped={len(self.skipped)}, failed={len(self.failed)}"
                f"{more})")


def sweep(notebook: str | Path, grid: dict, out_dir: str | Path, fixed: dict | None = None,
          progress: bool = True, limit: int | None = None) -> SweepReport:
    """Run ``notebook`` for every combination of ``grid`` (plus the ``fixed`` parameters).

    Every name must be in the notebook's parameters cell; an unknown one is an error before any
    run starts. ``RESULTS_PATH`` is set per run. ``limit`` stops after that many new runs (the
    rest are left for the next call: a long sweep in pieces, or an interruption on purpose).
    Returns a ``SweepReport``; runs not reached because of ``limit`` are in ``report.pending``.
    """
    from tqdm.auto import tqdm

    notebook, out_dir = Path(notebook), Path(out_dir)
    fixed = dict(fixed or {})
    known = notebook_parameters(notebook)
    unknown = sorted((set(grid) | set(fixed)) - set(known))
    if unknown:
        raise ValueError(f"{notebook.name} has no parameter(s) {unknown}; its parameters cell defines: "
                         f"{', '.join(known)}")
    if "RESULTS_PATH" in grid or "RESULTS_PATH" in fixed:
        raise ValueError("the sweep sets RESULTS_PATH for every run; leave it out of the grid")
    if limit is not None and limit < 0:
        raise ValueError(f"limit={limit}: give the number of new runs to do (or None for all)")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = SweepReport()
    runs = grid_runs(grid)
    try:
        for params in tqdm(runs, desc=f"sweep {notebook.stem}", disable=not progress):
            name = run_name(params)
            results_path = out_dir / f"{name}.json"
            if _finished(results_path):
                changed = _changed_parameters(out_dir / f"{name}.ipynb", {**fixed, **params})
                if not changed:
                    report.skipped.append(name)
                    continue
                kept = _set_aside(out_dir, name)
                report.replaced.append(name)
                print(f"{name}: its finished run had other parameters ({changed}); running it again, the earlier "
                      f"files are kept in {kept}")
            if limit is not None and len(report.done) + len(report.failed) >= limit:
                report.pending.append(name)
                continue
            partial = out_dir / f".{name}.json.partial"  # a run stopped half-way leaves only this
            try:
                run_notebook(notebook, out_dir / f"{name}.ipynb",
                             {**_as_lists({**fixed, **params}), "RESULTS_PATH": str(partial.resolve())})
                _keep_params(partial, params)
                partial.replace(results_path)  # only a finished run counts as done
                report.done.append(name)
            except Exception as e:  # noqa: BLE001 - a failed run is reported, the others go on
                report.failed[name] = getattr(e, "error", None) or f"{type(e).__name__}: {e}"
                partial.unlink(missing_ok=True)
    except KeyboardInterrupt:
        print(f"sweep interrupted: {len(report.done)} run(s) finished now and {len(report.skipped)} before are kept "
              f"in {out_dir}; call sweep() again to do the rest")
        raise
    if report.failed:
        print(f"{len(report.failed)} of {len(runs)} runs failed (their executed notebooks are in {out_dir}):")
        for name, why in report.failed.items():
            print(f"  {name}: {why}")
    return report


def _keep_params(results_path: Path, params: dict) -> None:
    """Write the run's swept parameters into its results file (``sweep_params``): ``collect``'s table shows them."""
    data = json.loads(results_path.read_text())
    data["sweep_params"] = _as_passed(params)
    results_path.write_text(json.dumps(data, indent=2, default=str))


def _finished(results_path: Path) -> bool:
    """True when a run's results file is there and valid (a broken one means: run it again)."""
    if not results_path.exists():
        return False
    try:
        load_results(results_path)
        return True
    except ValueError:
        return False


def _changed_parameters(executed: Path, wanted: dict) -> str:
    """How the parameters papermill recorded in an executed run differ from ``wanted`` ('' : the same, or unknown)."""
    try:
        recorded = json.loads(executed.read_text())["metadata"]["papermill"]["parameters"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # no executed notebook to compare with: trust the results file
    recorded = {k: v for k, v in recorded.items() if k != "RESULTS_PATH"}
    wanted = json.loads(json.dumps(wanted, default=str))  # as papermill stores them (tuples become lists)
    return ", ".join(f"{k}: {recorded.get(k, '(unset)')!r} then, {wanted.get(k, '(unset)')!r} now"
                     for k in sorted(set(recorded) | set(wanted)) if recorded.get(k) != wanted.get(k))


def _set_aside(out_dir: Path, name: str) -> Path:
    """Move a run's files into ``out_dir/replaced/`` under a name no earlier move used; returns the folder."""
    kept = out_dir / "replaced"
    kept.mkdir(exist_ok=True)
    n = 1
    while any((kept / f"{name}.{n}{ext}").exists() for ext in (".json", ".ipynb")):
        n += 1
    for ext in (".json", ".ipynb"):
        if (out_dir / f"{name}{ext}").exists():
            (out_dir / f"{name}{ext}").replace(kept / f"{name}.{n}{ext}")
    return kept


def collect(out_dir: str | Path, metrics: list[str] | None = None, runs: list[dict] | None = None) -> list[dict]:
    """One row per finished run in ``out_dir``: its swept parameters, its ``wall_time_s``, then metrics.

    The parameters are those the run was given, kept in its results file (``sweep_params``; a list there, a tuple in
    the grid, is a tuple here); a results file of an earlier sslkit without them gives those its plain name spells.

    ``runs`` (``grid_runs``' list): only those runs, in that order (a folder may also hold the runs of an earlier
    grid, e.g. the same sweep with other parameters); without it, every results file in ``out_dir``.
    """
    if runs is None:
        paths = sorted(Path(out_dir).glob("*.json"))
    else:
        paths = [p for p in (Path(out_dir) / f"{run_name(r)}.json" for r in runs) if p.is_file()]
    rows = []
    for path in paths:
        data = load_results(path)
        kept = data.get("sweep_params")
        if isinstance(kept, dict):
            row = {k: _as_tuples(v) for k, v in kept.items()}
        else:
            row = _parse_name(path.stem)
            if "~" in path.stem:  # a hashed name's values were sanitised: the table cannot show them as they were
                warnings.warn(f"{path.name} holds no sweep_params (it was not written by sslkit.sweep.sweep): its "
                              f"parameters are shown as its name spells them, sanitised; run the sweep again to "
                              f"record them", stacklevel=2)
        row["wall_time_s"] = data["wall_time_s"]
        wanted = metrics or list(data["metrics"])
        row.update({m: data["metrics"].get(m) for m in wanted})
        rows.append(row)
    return rows


def format_table(rows: list[dict], digits: int = 3) -> str:
    """A plain-text table of ``collect``'s rows (no pandas needed)."""
    if not rows:
        return "(no finished runs)"
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v):
        if isinstance(v, float):
            fixed = f"{v:.{digits}f}"  # a small value (a learning rate of 3e-4) keeps its digits, not 0.000
            return fixed if abs(float(fixed) - v) <= 0.005 * abs(v) else f"{v:.{digits}g}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def plot(rows: list[dict], x: str, y: str, hue: str | None = None):
    """A line plot of metric ``y`` against swept parameter ``x`` (one line per value of ``hue``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    groups = {}
    for r in rows:
        groups.setdefault(r.get(hue) if hue else y, []).append(r)
    for label, group in groups.items():
        pts = sorted((_num(r[x]), r[y]) for r in group if r.get(y) is not None)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=str(label))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if hue:
        ax.legend(title=hue)
    fig.tight_layout()
    return fig


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


if __name__ == "__main__":  # python -m sslkit.sweep OUT_DIR --grid ...: the command line lives in sslkit.sweepcli
    from sslkit.sweepcli import main

    raise SystemExit(main())

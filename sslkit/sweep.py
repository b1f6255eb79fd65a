"""Parameter sweeps over a notebook: every combination is one papermill run with its own files.

``sweep(notebook, grid, out_dir)`` runs the notebook once per combination of the grid's values.
Each run writes ``out_dir/<run>.ipynb`` (the executed notebook) and ``out_dir/<run>.json`` (its
results file). A run whose results file already exists is not run again, so an interrupted sweep
finishes the missing runs when called again; a failed run is reported and the others go on.
``collect(out_dir)`` reads the results files back into rows for a table or a plot.

>>> grid_runs({"METHOD": ["simclr", "byol"], "SEED": [0, 1]})[:2]
[{'METHOD': 'simclr', 'SEED': 0}, {'METHOD': 'simclr', 'SEED': 1}]
>>> run_name({"METHOD": "simclr", "LR": 0.003})
'METHOD=simclr,LR=0.003'
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .nbtools import NotebookError, notebook_parameters, run_notebook
from .results import load_results


def grid_runs(grid: dict) -> list[dict]:
    """Every combination of the grid's values, in order (the last name varies fastest)."""
    names = list(grid)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in grid.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def run_name(params: dict) -> str:
    """A file-name-safe name for one run."""
    text = ",".join(f"{k}={v}" for k, v in params.items())
    return re.sub(r"[^A-Za-z0-9=,._+-]", "_", text)


@dataclass
class SweepReport:
    """What a sweep did: runs done now, runs skipped (already done), runs that failed (with why)."""

    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)

    def __repr__(self):
        return f"SweepReport(done={len(self.done)}, skipped={len(self.skipped)}, failed={len(self.failed)})"


def sweep(notebook: str | Path, grid: dict, out_dir: str | Path, fixed: dict | None = None,
          progress: bool = True) -> SweepReport:
    """Run ``notebook`` for every combination of ``grid`` (plus the ``fixed`` parameters).

    Every name must be in the notebook's parameters cell; an unknown one is an error before any
    run starts. ``RESULTS_PATH`` is set per run. Returns a ``SweepReport``.
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
    out_dir.mkdir(parents=True, exist_ok=True)
    report = SweepReport()
    runs = grid_runs(grid)
    for params in tqdm(runs, desc=f"sweep {notebook.stem}", disable=not progress):
        name = run_name(params)
        results_path = out_dir / f"{name}.json"
        if results_path.exists():
            try:
                load_results(results_path)
                report.skipped.append(name)
                continue
            except ValueError:
                pass  # a broken file from an interrupted run: run it again
        partial = out_dir / f".{name}.json.partial"
        try:
            run_notebook(notebook, out_dir / f"{name}.ipynb",
                         {**fixed, **params, "RESULTS_PATH": str(partial.resolve())})
            partial.replace(results_path)  # only a finished run counts as done
            report.done.append(name)
        except (NotebookError, OSError, ValueError) as e:
            report.failed[name] = getattr(e, "error", None) or f"{type(e).__name__}: {e}"
            partial.unlink(missing_ok=True)
    if report.failed:
        print(f"{len(report.failed)} of {len(runs)} runs failed (their executed notebooks are in {out_dir}):")
        for name, why in report.failed.items():
            print(f"  {name}: {why}")
    return report


def collect(out_dir: str | Path, metrics: list[str] | None = None) -> list[dict]:
    """One row per finished run in ``out_dir``: its swept parameters (from the file name), then metrics."""
    rows = []
    for path in sorted(Path(out_dir).glob("*.json")):
        data = load_results(path)
        row = dict(part.split("=", 1) for part in path.stem.split(",") if "=" in part)
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
        return f"{v:.{digits}f}" if isinstance(v, float) else ("" if v is None else str(v))

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

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

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .nbtools import KERNEL, notebook_parameters, run_notebook
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
                             {**fixed, **params, "RESULTS_PATH": str(partial.resolve())})
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
    """One row per finished run in ``out_dir``: its swept parameters (from the file name), then metrics.

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


# ----------------------------------------------------------------------------------------------
# the experiment one run makes, and a small notebook around it for sweeps


def run_experiment(method_name: str, cfg, results=None, data: tuple | None = None, progress: bool = False) -> dict:
    """Train method ``method_name`` on ``cfg``'s dataset, evaluate its backbone, record the numbers.

    The method is built by ``sslkit.cli.build`` (``cfg.extra`` knobs go to the backbone, the method or its views, as
    for ``python -m sslkit.train``), trained on the ``unlabeled`` split for the planned ``cfg.num_epochs``
    (``cfg.time_budget_s``, when set, is a cap that may stop it earlier; a method that collapses under AdamW keeps its
    recipe's optimizer: ``sslkit.recipes.with_own_optimizer``; SimSiam trains with SGD), and evaluated with
    ``evaluate_backbone`` on ``train`` (the kNN bank, the probe's training set) and ``test``. A dataset without labels
    (a flat image folder) is trained on and not evaluated.

    Args:
        data: ``(unlabeled, train, test)`` already loaded (None: ``load_split`` them from ``cfg``;
            ``train`` and ``test`` may be None for a dataset without labels).
    A run whose loss became NaN or infinite raises ``FloatingPointError`` (after recording ``diverged: 1``), so
    that a sweep lists it as failed and keeps no results file for it.

    Returns the metrics (also recorded in ``results`` if given): ``knn``, ``linear``, ``std``,
    ``uniformity``, ``alignment``, ``steps``, ``epochs``, ``train_s``, ``final_loss``, ``lr`` (the peak
    learning rate it trained with). ``results`` also gets the training's ``Results.record_training`` entries under
    the method's name (``train_s_simclr``, ..., and ``cut_short_simclr`` when a time budget cut the run short).
    """
    from .data import load_split
    from .evaluate import evaluate_backbone
    from .cli import build
    from .recipes import with_own_optimizer
    from .train import train

    method = build(method_name, cfg)  # first: a typo in the method's name fails before any loading
    cfg = with_own_optimizer(method_name, cfg)  # e.g. SimSiam trains with SGD
    if data is None:
        unlabeled = load_split(cfg, "unlabeled")
        try:
            train_data, test_data = load_split(cfg, "train"), load_split(cfg, "test")
        except ValueError as e:  # e.g. a flat folder: only an unlabeled split
            print(f"trained only, not evaluated: {e}")
            train_data = test_data = None
    else:
        unlabeled, train_data, test_data = data
    history = train(method, unlabeled, cfg, progress=progress)
    if results is not None:  # steps, epochs and seconds under the method's name; a run a time budget cut is marked
        results.record_training(method_name, history)
    metrics = {"steps": history.steps, "epochs": history.epochs, "train_s": history.wall_time_s, "lr": cfg.lr}
    if history.losses:
        metrics["final_loss"] = history.final_loss
    if history.stop_reason == "non-finite loss":  # a failed run: marked, and an error (a sweep lists it as failed)
        if results is not None:
            results.update({**metrics, "diverged": 1})
        raise FloatingPointError(f"{method_name} diverged: {history.message}")
    if train_data is not None and test_data is not None:
        metrics.update(evaluate_backbone(method.backbone, train_data, test_data, seed=cfg.seed, name=method_name,
                                         k=min(200, len(train_data))))
    if results is not None:
        results.update(metrics)
    return metrics


# the parameters of the experiment notebook: name -> (default, comment)
EXPERIMENT_PARAMETERS = {
    "PROFILE": ('"lesson"', '"smoke", "lesson" or "full"'),
    "RESULTS_PATH": ("None", "None: results/experiment.<profile>.json"),
    "NOTEBOOK_VALUES": ('"08_your_data"', "whose per-profile values fill in the knobs left at None "
                                         "(sslkit.recipes.NOTEBOOK_VALUES); None: the profile's only"),
    "METHOD": ('"simclr"', "any of sslkit.methods.METHODS"),
    "DATASET": ("None", '"shapes", "cifar10", "stl10", "imagenette" or an image folder; None: the profile\'s'),
    "BACKBONE": ("None", "see sslkit.models.BACKBONES; None: the profile's"),
    "WIDTH": ("None", "channels of a small ResNet's first stage; None: the backbone's"),
    "IMAGE_SIZE": ("None", "pixels; None: the profile's (32)"),
    "TIME_BUDGET_S": ("None", "an optional cap in seconds: fit the training into it and stop; None: train the "
                              "planned epochs"),
    "NUM_EPOCHS": ("None", "passes over the unlabeled split (planned); None: NOTEBOOK_VALUES' (lesson: 6) "
                          "or the profile's"),
    "BATCH_SIZE": ("None", "images per step"),
    "LR": ("None", "peak learning rate"),
    "TEMPERATURE": ("None", "for the contrastive methods (simclr, moco)"),
    "NUM_UNLABELED": ("None", "images to train on"),
    "NUM_TRAIN": ("None", "labeled images: the kNN bank and the linear probe's training set"),
    "NUM_TEST": ("None", "test images"),
    "DEVICE": ("None", '"auto", "cpu", "cuda", "mps"'),
    "SEED": ("None", "None: the profile's (0)"),
}


def experiment_notebook(path) -> Path:
    """Write a small notebook that runs ``run_experiment`` with the knobs of its parameters cell.

    The notebook a sweep runs when one run should be one training and its evaluation, not a
    whole lesson. Its parameters are ``EXPERIMENT_PARAMETERS`` (all None: the profile's values,
    and those of ``NOTEBOOK_VALUES``, notebook 08's by default). Returns the path.

    >>> import tempfile
    >>> nb = experiment_notebook(Path(tempfile.mkdtemp()) / "experiment.ipynb")
    >>> sorted(notebook_parameters(nb))[:4]
    ['BACKBONE', 'BATCH_SIZE', 'DATASET', 'DEVICE']
    """
    import nbformat

    path = Path(path)
    parameters = "\n".join(f"{name} = {default}  # {comment}" for name, (default, comment)
                           in EXPERIMENT_PARAMETERS.items())
    code = ("import sslkit\nfrom sslkit.config import NOT_KNOBS\nfrom sslkit.sweep import run_experiment\n\n"
            "# every knob of the parameters cell (None: the profile's value) but the notebook's values and the method\n"
            "knobs = sslkit.parameters(globals(), exclude=(*NOT_KNOBS, \"NOTEBOOK_VALUES\", \"METHOD\"))\n"
            "cfg = sslkit.make_config(PROFILE, notebook=NOTEBOOK_VALUES, **knobs)\n"
            "results = sslkit.Results(\"experiment\", {**cfg.to_dict(), \"method\": METHOD}, RESULTS_PATH)\n"
            "metrics = run_experiment(METHOD, cfg, results)\n"
            "results.save()  # the run is done: its results file is marked complete\n"
            "print(METHOD, cfg.dataset, {k: round(v, 4) for k, v in metrics.items()})")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python (sslkit)", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# One experiment: train a method, evaluate its backbone\n"
                                              "Written by `sslkit.sweep.experiment_notebook`; run by "
                                              "`sslkit.sweep.sweep` once per combination of a grid."),
                nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(code)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path

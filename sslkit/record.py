"""Record lesson runs: the committed reference runs of ``results/``, on every seed, in one command.

    python -m sslkit.record 02_contrastive 04_masked 06_gradcam 07_finetune 09_deploy --seeds 0 1 2

runs each notebook at the lesson profile with papermill, one run after another, in the order that lets a notebook
load the models an earlier one saved (06 loads 02's SimCLR and 04's ViT; 07 and 09 load 02's SimCLR):

- seeds other than 0 first, each in its own copy of ``notebooks/`` (``.record/seedN/``, made fresh without
  ``checkpoints/`` at the start, so a notebook loads only what this command trained with that seed); the results go
  to ``results/seeds/NN_name.lesson.seedN.json``;
- then seed 0 in ``notebooks/`` itself: ``results/NN_name.lesson.json`` and ``results/executed/NN_name.lesson.ipynb``
  (the book's figures), after the other seeds, so the notebook's "what you just saw" cell quotes the seed range of
  the files just written. A notebook with a ``REPLAY`` switch (02 and 03) runs three times: with ``REPLAY =
  "record"``, every training trained and saved as a replay under ``results/replay/`` (its results:
  ``results/replay/NN_name.lesson.trained.json``); then as a class runs it, with the notebook's own ``REPLAY``
  (the lesson's method trained, the comparisons replayed: ``results/NN_name.lesson.json``, the time its header
  quotes); then with ``REPLAY = True`` (``results/replay/NN_name.lesson.replayed.json``). ``tests/test_replay.py``
  checks that the three give the same numbers. ``--keep-replays`` skips the first run and uses the committed
  replays (when the code that trains them has not changed since they were recorded). Other seeds train everything
  (``REPLAY = False``): the committed replays are seed 0's.

Record alone on the machine: a second job on 2 cores halves the run's speed, and the headers quote the recorded
times. The command prints the CPU (its vector instructions and ``matmul_gflops()``) and refuses to start while the
load average says another job runs (``--allow-busy`` to record anyway). It stops at the first notebook that fails
(what it had written is in its results file, marked incomplete) and says which.

``--dry-run`` prints the runs without starting them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the models a notebook loads from checkpoints/ when present, by the notebook that saves them
SIMCLR, MAE = ("02_contrastive", "simclr_backbone"), ("04_masked", "mae_vit")
LOADS = {"06_gradcam": (SIMCLR, MAE), "07_finetune": (SIMCLR,), "09_deploy": (SIMCLR,)}
BUSY_LOAD = 1.0  # 1-minute load average above which the machine counts as busy (a training alone: about 2 at its end)


@dataclass
class Run:
    notebook: str
    seed: int
    cwd: Path
    output: Path
    parameters: dict = field(default_factory=dict)

    def command(self, root: Path) -> str:
        params = " ".join(f"-p {k} {v}" for k, v in self.parameters.items())
        return (f"papermill notebooks/{self.notebook}.ipynb {_rel(self.output, root)} -k sslkit "
                f"--cwd {_rel(self.cwd, root)} {params}")


def _from(cwd: Path, path) -> str:
    """``path`` relative to the folder the notebook runs in (papermill's --cwd), as the notebook resolves it: a
    stored run then names its results file the same way on every clone (``sslkit.book`` checks it is the recorded
    run's), not by this machine's absolute path."""
    return os.path.relpath(path, cwd)


def _results_file(run: Run) -> Path:
    """Where a run's results file lands: its RESULTS_PATH from the folder the notebook runs in."""
    return (run.cwd / run.parameters["RESULTS_PATH"]).resolve()


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def resolve(names: list[str], root: Path = ROOT) -> list[str]:
    """Notebook names from what a user types (``02``, ``02_contrastive`` or ``02_contrastive.ipynb``), in order."""
    available = sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    found = []
    for name in names:
        stem = Path(name).name.removesuffix(".ipynb")
        match = [n for n in available if n == stem or n.split("_")[0] == stem]
        if not match:
            raise ValueError(f"no notebook {name!r}; choose from: {', '.join(available)} (or their numbers)")
        found.append(match[0])
    return sorted(set(found))


def plan(notebooks: list[str], seeds: list[int], profile: str = "lesson", root: Path = ROOT,
         keep_replays: bool = False) -> list[Run]:
    """The runs, in order: other seeds first, then seed 0; within a seed, by notebook number."""
    from .checkpoint import model_path
    from .nbtools import notebook_parameters

    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds {seeds}: give distinct whole numbers >= 0, e.g. --seeds 0 1 2")
    runs = []
    for seed in sorted(seeds, key=lambda s: (s == 0, s)):
        for notebook in notebooks:
            # seed 0 may load what an earlier recording left in notebooks/checkpoints/; another seed only what
            # this command trains in its fresh copy
            missing = [n for n, model in LOADS.get(notebook, ()) if n not in notebooks
                       and (seed != 0 or not model_path(model, profile, root / "notebooks" / "checkpoints").exists())]
            if missing:
                together = " ".join(sorted(set(notebooks) | set(missing)))
                raise ValueError(f"{notebook} with seed {seed} loads what {' and '.join(missing)} saved with that seed, "
                                 f"and would train it itself instead: record them in the same command "
                                 f"(python -m sslkit.record {together} --seeds {' '.join(map(str, seeds))})")
            replay = "REPLAY" in notebook_parameters(root / "notebooks" / f"{notebook}.ipynb")
            base = {"PROFILE": profile}
            if seed != 0:
                folder = root / ".record" / f"seed{seed}"
                out = root / "results" / "seeds" / f"{notebook}.{profile}.seed{seed}"
                runs.append(Run(notebook, seed, folder / "notebooks", folder / f"{notebook}.{profile}.seed{seed}.ipynb",
                                {**base, "SEED": seed, **({"REPLAY": False} if replay else {}),
                                 "RESULTS_PATH": _from(folder / "notebooks", f"{out}.json")}))
                continue
            runs += _seed_0(notebook, profile, root, replay, keep_replays)
    return runs


def _seed_0(notebook: str, profile: str, root: Path, replay: bool, keep_replays: bool) -> list[Run]:
    """Seed 0's runs of ``notebook`` in ``notebooks/``: with a ``REPLAY`` switch, everything trained and saved as
    replays (unless ``keep_replays``), the notebook as a class runs it, then everything replayed; else one run."""
    from .replay import recorded_names

    saved, cwd = root / "results" / "replay", root / "notebooks"
    if replay and keep_replays and not recorded_names(notebook, profile, saved):
        raise ValueError(f"--keep-replays: {notebook} has no replays at the {profile} profile in {saved}; "
                         f"record without --keep-replays")

    def run(output: Path, results: Path, **replay_value) -> Run:
        return Run(notebook, 0, cwd, output, {"PROFILE": profile, **replay_value, "RESULTS_PATH": _from(cwd, results)})

    name = f"{notebook}.{profile}"
    runs = []
    if replay and not keep_replays:
        runs.append(run(root / ".record" / f"{name}.trained.ipynb", saved / f"{name}.trained.json", REPLAY="record"))
    runs.append(run(root / "results" / "executed" / f"{name}.ipynb", root / "results" / f"{name}.json"))
    if replay:
        runs.append(run(root / ".record" / f"{name}.replayed.ipynb", saved / f"{name}.replayed.json", REPLAY=True))
    return runs


def fresh_copies(runs: list[Run], root: Path = ROOT) -> None:
    """A fresh copy of notebooks/ (without checkpoints/ or run outputs) for each seed other than 0."""
    for folder in sorted({r.cwd for r in runs if r.seed != 0}):
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(root / "notebooks", folder,
                        ignore=shutil.ignore_patterns("checkpoints", "results", "runs", ".ipynb_checkpoints"))


def host() -> dict:
    """What a recording's times depend on: results.hardware()'s vector instructions and threads, the measured matmul
    rate (hosts of one name differ severalfold) and the load (another job halves a lesson's speed)."""
    from .results import hardware
    from .stepbench import matmul_gflops

    hw = hardware()
    return {"cpu_capability": hw["cpu_capability"], "torch_threads": hw["torch_threads"],
            "matmul_gflops": round(matmul_gflops(), 1), "load_1min": round(os.getloadavg()[0], 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sslkit.record", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", help="notebooks to record: 02, 02_contrastive, ...")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to record (default 0)")
    parser.add_argument("--profile", default="lesson", help="the profile recorded (default lesson)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs without starting them")
    parser.add_argument("--keep-replays", action="store_true",
                        help="use the committed replays of notebooks 02 and 03 instead of training and recording them")
    parser.add_argument("--allow-busy", action="store_true", help="record even while another job loads the machine")
    args = parser.parse_args(argv)
    try:
        from .config import PROFILES
        if args.profile not in PROFILES:
            raise ValueError(f"unknown profile {args.profile!r}; choose one of: {', '.join(PROFILES)}")
        runs = plan(resolve(args.notebooks, ROOT), args.seeds, args.profile, ROOT, args.keep_replays)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i, run in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] seed {run.seed}: {run.command(ROOT)}")
    if args.dry_run:
        return 0
    figures = host()
    print("host:", json.dumps(figures))
    if figures["load_1min"] > BUSY_LOAD and not args.allow_busy:
        print(f"error: the 1-minute load average is {figures['load_1min']}: another job is running, and a lesson "
              f"recorded beside it runs slower than the header will say. Wait for it to finish (`uptime`), or pass "
              f"--allow-busy to record anyway.", file=sys.stderr)
        return 2
    from .nbtools import NotebookError, run_notebook

    fresh_copies(runs, ROOT)
    for i, run in enumerate(runs, 1):
        run.output.parent.mkdir(parents=True, exist_ok=True)
        _results_file(run).parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        replay = f" (REPLAY {run.parameters['REPLAY']})" if "REPLAY" in run.parameters else ""
        print(f"[{i}/{len(runs)}] {run.notebook} seed {run.seed}{replay}...", flush=True)
        try:
            run_notebook(ROOT / "notebooks" / f"{run.notebook}.ipynb", run.output, run.parameters, cwd=run.cwd,
                         timeout=None)
        except NotebookError as e:
            print(f"error: {run.notebook} seed {run.seed} failed; the runs after it were not started "
                  f"(its results file {_results_file(run)} is marked incomplete)\n{e}", file=sys.stderr)
            return 1
        print(f"[{i}/{len(runs)}] done in {time.perf_counter() - start:.0f} s: {_results_file(run)}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

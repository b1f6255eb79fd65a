"""Fixtures shared by test files: each notebook executed once at the smoke profile per test session."""
import os
from pathlib import Path

import pytest
from filelock import FileLock

from sslkit.nbtools import NotebookError, notebook_parameters, run_notebook
from sslkit.record import LOADS


class SmokeRuns:
    """Executes a notebook at the smoke profile on first request and keeps the run (or its failure), so the
    notebook tests and the book build share one execution per notebook. ``root`` is one folder for the whole
    session: with ``pytest -n`` (pytest-xdist) every worker sees it, a lock per notebook makes the first worker
    that asks run it and the others wait for it, and a failure is kept as text for every test that asks again.

    A notebook with a ``REPLAY`` switch runs with ``REPLAY = "record"``, so its trainings are saved (under
    ``$SSLKIT_REPLAY_DIR``, a temporary folder) for ``tests/test_replay.py`` to replay; recording changes none of
    its numbers. A notebook that loads another's model from checkpoints/ (``sslkit.record.LOADS``: 06, 07 and 09 load
    02's SimCLR, 06 also 04's ViT) runs after that notebook's smoke run, so that it always loads that checkpoint,
    whichever test or worker asks first."""

    def __init__(self, root: Path):
        self.root = root

    def run(self, path: Path) -> tuple[Path, Path]:
        """(executed notebook, results file) of ``path`` run at smoke; raises the first run's error again."""
        path = Path(path)
        params = notebook_parameters(path)
        for notebook, _ in LOADS.get(path.stem, ()):
            self.run(path.parent / f"{notebook}.ipynb")
        out = self.root / path.stem
        executed, results, failed = out / path.name, out / "results.json", out / "error.txt"
        done = out / "done"  # written last: a run whose worker died half-way is run again
        with FileLock(str(self.root / f"{path.stem}.lock")):
            if not done.exists() and not failed.exists():
                out.mkdir(parents=True, exist_ok=True)
                try:
                    record = {"REPLAY": "record"} if "REPLAY" in params else {}
                    run_notebook(path, executed, {"PROFILE": "smoke", "RESULTS_PATH": str(results), **record})
                    done.touch()
                except Exception as e:  # noqa: BLE001 - kept and raised again for every test that needs this run
                    failed.write_text(f"{type(e).__name__}: {e}")
        if failed.exists():
            raise NotebookError(failed.read_text())
        return executed, results


def _session_dir(tmp_path_factory, name: str) -> Path:
    """A folder every pytest-xdist worker of this session shares (the session's base temp folder's parent holds
    one base folder per worker); without xdist, an ordinary temporary folder."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / name
        folder.mkdir(exist_ok=True)
        return folder
    return tmp_path_factory.mktemp(name)


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    os.environ["SSLKIT_REPLAY_DIR"] = str(_session_dir(tmp_path_factory, "replays"))  # never results/replay
    return SmokeRuns(_session_dir(tmp_path_factory, "smoke-runs"))

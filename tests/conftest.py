"""Fixtures shared by test files: each notebook executed once at the smoke profile per test session."""
import os
from pathlib import Path

import pytest

from sslkit.nbtools import notebook_parameters, run_notebook


class SmokeRuns:
    """Executes a notebook at the smoke profile on first request and caches the run (or its failure), so the
    notebook tests and the book build share one execution per notebook. A notebook with a ``REPLAY`` switch runs
    with ``REPLAY = "record"``, so its trainings are saved (under ``$SSLKIT_REPLAY_DIR``, a temporary folder) for
    ``tests/test_replay.py`` to replay; recording changes none of its numbers."""

    def __init__(self, root: Path):
        self.root, self._runs = root, {}

    def run(self, path: Path) -> tuple[Path, Path]:
        """(executed notebook, results file) of ``path`` run at smoke; re-raises the first run's error."""
        path = Path(path)
        if path not in self._runs:
            out = self.root / path.stem
            out.mkdir(parents=True, exist_ok=True)
            executed, results = out / path.name, out / "results.json"
            try:
                record = {"REPLAY": "record"} if "REPLAY" in notebook_parameters(path) else {}
                run_notebook(path, executed, {"PROFILE": "smoke", "RESULTS_PATH": str(results), **record})
                self._runs[path] = (executed, results)
            except Exception as e:  # noqa: BLE001 - kept and raised again for every test that needs this run
                self._runs[path] = e
        run = self._runs[path]
        if isinstance(run, Exception):
            raise run
        return run


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    os.environ["SSLKIT_REPLAY_DIR"] = str(tmp_path_factory.mktemp("replays"))  # never the repository's results/replay
    return SmokeRuns(tmp_path_factory.mktemp("smoke-runs"))

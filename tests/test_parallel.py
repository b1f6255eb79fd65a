"""`make test` runs the suite in pytest-xdist workers (`pytest -n auto`): what keeps that correct.

The root ``conftest.py`` keeps a notebook's nbval cells, and the files whose tests share a costly module fixture, on
one worker, and gives each worker its share of the cores as torch threads; ``tests/conftest.py``'s smoke runs are
shared by every worker of a session, each notebook run once.
"""
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_notebooks_cells_and_a_shared_fixtures_file_go_to_one_worker():
    unit = _module(ROOT / "conftest.py", "root_conftest")._work_unit
    assert unit("notebooks/00_welcome.ipynb::Cell 3") == unit("notebooks/00_welcome.ipynb::Cell 7")
    assert unit("tests/test_book.py::test_index") == unit("tests/test_book.py::test_links[00_welcome]")
    assert unit("tests/test_cli.py::test_help") != unit("tests/test_cli.py::test_run")  # the others spread one by one


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER_COUNT"), reason="runs in a pytest-xdist worker (make test)")
def test_a_worker_uses_its_share_of_the_cores():
    share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    assert os.environ["OMP_NUM_THREADS"] == str(share) and torch.get_num_threads() == share


def _notebook(path: Path, source: str) -> Path:
    cells = [{"cell_type": "code", "id": "p", "metadata": {"tags": ["parameters"]}, "execution_count": None,
              "outputs": [], "source": 'PROFILE = "lesson"\nRESULTS_PATH = None'},
             {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": None, "outputs": [], "source": source}]
    path.write_text(json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "sslkit", "display_name": "Python (sslkit)", "language": "python"}}}))
    return path


def test_smoke_runs_are_shared_by_every_worker_and_a_failure_is_kept(tmp_path):
    """Two SmokeRuns on one folder, as two workers have: the second gets the first's run without running the
    notebook again (the notebook counts its runs in a file), and the first's failure as an error."""
    from sslkit.nbtools import NotebookError

    smoke = _module(ROOT / "tests" / "conftest.py", "tests_conftest")
    runs = tmp_path / "runs"
    count = tmp_path / "count.txt"
    good = _notebook(tmp_path / "good.ipynb", f"with open({str(count)!r}, 'a') as f:\n    f.write('run\\n')\n"
                                               f"open(RESULTS_PATH, 'w').write('{{}}')")
    bad = _notebook(tmp_path / "bad.ipynb", "raise ValueError('planted')")
    runs.mkdir()
    first, second = smoke.SmokeRuns(runs), smoke.SmokeRuns(runs)
    executed, results = first.run(good)
    assert second.run(good) == (executed, results) and results.exists()
    assert count.read_text() == "run\n", "the notebook ran again"
    for worker in (first, second):
        with pytest.raises(NotebookError, match="planted"):
            worker.run(bad)

# Tests and nbval execute the notebooks at the smoke profile (sslkit.config reads SSLKIT_PROFILE);
# a notebook run that writes results puts them next to it in results/<name>.smoke.json.
import os

import pytest

os.environ.setdefault("SSLKIT_PROFILE", "smoke")

# `make test` runs the suite in pytest-xdist workers (`pytest -n auto`, one per core). Each worker, and every kernel
# and process it starts (they inherit the environment), gets its share of the cores as torch threads: two workers
# with two threads each on two cores would spin-wait on each other's cores (docs/test_suite.md: 3.5-4.5x slower).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = _threads

# test files whose tests share a costly module fixture (a JupyterLab server, a trained model, the built book) run on
# one worker, as does each notebook nbval re-runs (its cells run in order in one kernel); every other test is a work
# unit of its own. (xdist's `--dist loadgroup` would do this with marks, but it cannot rename a test's id under
# pytest 9, so the marks are lost; its documented hook for a scheduler does it here.)
_ONE_WORKER = {"test_book.py", "test_browser.py", "test_deploy.py", "test_deploycli.py", "test_distributed.py"}


def _work_unit(nodeid: str) -> str:
    """The tests that go to one worker together: a notebook's cells, a file of _ONE_WORKER, else one test.

    >>> _work_unit("notebooks/00_welcome.ipynb::Cell 3"), _work_unit("tests/test_book.py::test_index[x]")
    ('notebooks/00_welcome.ipynb', 'tests/test_book.py')
    >>> _work_unit("tests/test_cli.py::test_help")
    'tests/test_cli.py::test_help'
    """
    path = nodeid.split("::", 1)[0]
    return path if path.endswith(".ipynb") or path.rsplit("/", 1)[-1] in _ONE_WORKER else nodeid


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: pytest without it runs the suite in one process
def pytest_xdist_make_scheduler(config, log):
    """``pytest -n N`` (any load-balancing ``--dist``): xdist's scope scheduler over the work units above."""
    if config.getvalue("dist") not in ("load", "loadscope", "loadgroup", "loadfile"):
        return None  # "each", "worksteal": as xdist does them
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    return WorkUnits(config, log)


def pytest_ignore_collect(collection_path, config):
    """nbval re-runs only the notebooks that have cells marked NBVAL_CHECK_OUTPUT (their stored outputs are
    compared); every notebook is executed anyway by tests/test_notebooks.py, so running the others a second
    time would only double the suite's time."""
    if collection_path.parent.name == "notebooks" and collection_path.name in ("results", "checkpoints", "runs"):
        return True  # what notebook runs made (sweep output notebooks, checkpoints): not tests
    if collection_path.suffix == ".ipynb" and collection_path.parent.name == "notebooks":
        return "NBVAL_CHECK_OUTPUT" not in collection_path.read_text(encoding="utf-8")
    return None

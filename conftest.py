# Tests and nbval execute the notebooks at the smoke profile (sslkit.config reads SSLKIT_PROFILE);
# a notebook run that writes results puts them next to it in results/<name>.smoke.json.
import os

os.environ.setdefault("SSLKIT_PROFILE", "smoke")


def pytest_ignore_collect(collection_path, config):
    """nbval re-runs only the notebooks that have cells marked NBVAL_CHECK_OUTPUT (their stored outputs are
    compared); every notebook is executed anyway by tests/test_notebooks.py, so running the others a second
    time would only double the suite's time."""
    if collection_path.parent.name == "notebooks" and collection_path.name in ("results", "checkpoints", "runs"):
        return True  # what notebook runs made (sweep output notebooks, checkpoints): not tests
    if collection_path.suffix == ".ipynb" and collection_path.parent.name == "notebooks":
        return "NBVAL_CHECK_OUTPUT" not in collection_path.read_text(encoding="utf-8")
    return None

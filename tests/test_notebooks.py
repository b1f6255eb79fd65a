"""Every notebook in notebooks/ runs headless at the smoke profile and writes a valid results file.

A new notebook joins by itself. nbval (`--nbval-lax`, configured in pyproject.toml) separately re-runs the
notebooks and compares the cells marked NBVAL_CHECK_OUTPUT with their stored outputs; the tests below make
sure nothing else is stored.
"""
import json
import math
from pathlib import Path

import pytest

from sslkit.nbtools import NotebookError, notebook_parameters, run_notebook, unchecked_outputs
from sslkit.results import REQUIRED_KEYS, is_complete, load_results

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_clean(path):
    nb = json.loads(path.read_text())
    assert unchecked_outputs(nb) == [], (
        f"{path.name} carries outputs in cells not marked NBVAL_CHECK_OUTPUT (cells {unchecked_outputs(nb)}); "
        f"run `make strip-notebooks`")
    assert nb["metadata"]["kernelspec"]["name"] == "sslkit"
    ids = [c.get("id") for c in nb["cells"]]  # nbformat 4.5 wants one per cell (a missing one is a warning, later an error)
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: cells without an id or with the same id"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_has_one_parameters_cell_after_its_title(path):
    nb = json.loads(path.read_text())
    tagged = [i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters' (want exactly 1)"
    assert nb["cells"][0]["cell_type"] == "markdown" and "".join(nb["cells"][0]["source"]).startswith("# "), \
        f"{path.name} must open with a markdown title"
    params = notebook_parameters(path)
    assert {"PROFILE", "RESULTS_PATH"} <= set(params), f"{path.name} parameters: {sorted(params)}"
    assert params["PROFILE"] == '"lesson"', "the committed default profile is lesson"


def relisted_parameters(path) -> dict:
    """{cell index: [NAME, ...]} of the code cells that pass three or more of the parameters cell's names on one by one
    (``name=NAME`` or ``NAME=NAME``)."""
    import re

    params = set(notebook_parameters(path))
    found = {}
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        names = [b for a, b in re.findall(r"\b(\w+)\s*=\s*([A-Z][A-Z0-9_]*)\b", "".join(cell["source"]))
                 if b in params and a.upper() == b]
        if len(names) >= 3:
            found[i] = names
    return found


def test_relisted_parameters_finds_a_listing(tmp_path):
    nb = {"cells": [
        {"cell_type": "code", "id": "p", "metadata": {"tags": ["parameters"]},
         "source": "PROFILE = 'lesson'\nRESULTS_PATH = None\nLR = None\nSEED = None\nWIDTH = None", "outputs": [],
         "execution_count": None},
        {"cell_type": "code", "id": "a", "metadata": {}, "source": "knobs = sslkit.parameters(globals())\nx = dict(lr=LR)",
         "outputs": [], "execution_count": None},
        {"cell_type": "code", "id": "b", "metadata": {}, "source": "knobs = dict(lr=LR, seed=SEED,\n  WIDTH=WIDTH)",
         "outputs": [], "execution_count": None}],
        "metadata": {"kernelspec": {"name": "sslkit", "display_name": "sslkit", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "listing.ipynb"
    path.write_text(json.dumps(nb))
    assert relisted_parameters(path) == {2: ["LR", "SEED", "WIDTH"]}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_lists_each_knob_once(path):
    """The parameters cell lists each knob once, with its comment; the code hands them all on with
    ``sslkit.parameters(globals())`` instead of listing them again (a knob added to one list and not the other
    would be silently ignored)."""
    assert relisted_parameters(path) == {}, f"{path.name} lists parameters again: use sslkit.parameters(globals())"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_at_smoke(path, smoke_runs):
    _, results_path = smoke_runs.run(path)  # executed once per session (the book test builds from the same runs)
    results = load_results(results_path)  # raises on missing keys or non-finite metrics
    assert set(REQUIRED_KEYS) <= set(results)
    assert is_complete(results), f"{path.name}: the last cell does not call results.save() (the file looks unfinished)"
    assert results["notebook"] == path.stem and results["profile"] == "smoke"
    assert results["metrics"], f"{path.name} recorded no metrics"
    assert all(math.isfinite(v) for v in results["metrics"].values())


SPREAD = [p for p in NOTEBOOKS if "seed_spread(" in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("path", SPREAD, ids=[p.stem for p in SPREAD])
def test_what_you_just_saw_quotes_the_spread_over_the_recorded_seeds(path, smoke_runs):
    """Issue 22: after an experiment the learner reads their run beside the recorded lesson run and how much the seed
    alone moves it, once results/seeds/ holds the lesson run with another seed."""
    from sslkit.results import recorded_seeds

    seeds = sorted(recorded_seeds(path.stem))
    if len(seeds) < 2:
        pytest.skip(f"{path.stem} is recorded on seed {seeds} only: no spread to quote yet")
    executed, _ = smoke_runs.run(path)
    nb = json.loads(Path(executed).read_text(encoding="utf-8"))
    printed = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                      for c in nb["cells"] for o in c.get("outputs", []))
    named = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))
    assert f"the lesson run on seeds {named}: " in printed, f"{path.stem}: no spread over seeds {named} printed"


def test_failing_cell_is_reported_with_source_and_error(tmp_path):
    nb = {"cells": [
        {"cell_type": "code", "id": "p", "metadata": {"tags": ["parameters"]}, "source": "PROFILE = 'lesson'\nRESULTS_PATH = None",
         "outputs": [], "execution_count": None},
        {"cell_type": "code", "id": "x", "metadata": {}, "source": "x = 1\nraise ValueError('boom at ' + PROFILE)",
         "outputs": [], "execution_count": None}],
        "metadata": {"kernelspec": {"name": "sslkit", "display_name": "sslkit", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(NotebookError, match=r"(?s)raise ValueError.*ValueError: boom at smoke"):
        run_notebook(path, tmp_path / "out.ipynb", {"PROFILE": "smoke"})
    with pytest.raises(ValueError, match="no parameter"):
        run_notebook(path, tmp_path / "out.ipynb", {"NOT_A_PARAM": 1})


@pytest.mark.parametrize("command", ["strip", "refresh", "student"])
def test_nbtools_says_which_file_is_not_a_notebook(command, tmp_path, capsys):
    """``python -m sslkit.nbtools strip|refresh|student`` on a file that is not a notebook (text, JSON without
    cells, a missing path): exit 2 with the file and the fix, no traceback, and the file left as it was."""
    from sslkit.nbtools import main

    def status(argv):
        try:
            return main(argv)
        except SystemExit as e:  # student's argparse
            return e.code

    for name, content in [("text.ipynb", "hello"), ("empty.ipynb", "{}"), ("list.ipynb", "[1]"), ("gone.ipynb", None)]:
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        assert status([command, str(path), "--out", str(tmp_path / "out")] if command == "student"
                      else [command, str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and "Traceback" not in err
        assert ("No such file" in err) if content is None else ("is not a Jupyter notebook" in err
                                                                 and path.read_text() == content)
    assert not (tmp_path / "out").exists()

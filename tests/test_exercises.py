"""The exercises: each check passes on the notebook's solution, fails with its hint on every planted mistake,
says "not done yet" on the student version, and leaves the notebook's random state alone; the student versions
run to the end at smoke; the solution markers are well formed."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import sslkit.exercises as ex
from sslkit.nbtools import (PLACEHOLDER, load_teaching_cell, make_student, run_notebook, solution_blocks,
                            student_source)

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
EXERCISES = ex.exercises()
NAMES = sorted(EXERCISES)
LESSONS = [p for p in sorted(NOTEBOOKS.glob("0[1-8]_*.ipynb"))]


def _cell(name):
    e = EXERCISES[name]
    nb = json.loads((NOTEBOOKS / f"{e.notebook}.ipynb").read_text())
    cells = [c for c in nb["cells"] if f"exercise:{name}" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{e.notebook}: {len(cells)} cells tagged exercise:{name} (want 1)"
    return nb, cells[0]


def _answer(name, student=False):
    e = EXERCISES[name]
    path = NOTEBOOKS / f"{e.notebook}.ipynb"
    if not student:
        return load_teaching_cell(path, f"exercise:{name}")[e.answer_name]
    _, cell = _cell(name)
    namespace: dict = {}
    exec(compile(student_source("".join(cell["source"])), f"student {name}", "exec"), namespace)
    return namespace[e.answer_name]


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_lesson_has_two_exercises_with_their_checks(path):
    names = [n for n, e in EXERCISES.items() if e.notebook == path.stem]
    assert len(names) >= 2, f"{path.stem} has {len(names)} exercises (want at least 2)"
    text = path.read_text()
    for name in names:
        nb, cell = _cell(name)
        assert solution_blocks("".join(cell["source"])), f"exercise:{name} has no solution between the markers"
        code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        assert any(f"check_{name}(" in c for c in code), f"{path.stem}: no cell calls check_{name}"
    assert "### BEGIN SOLUTION" in text


@pytest.mark.parametrize("name", NAMES)
def test_the_check_passes_on_the_solution(name, capsys):
    outcome = ex.check(name, _answer(name))
    assert outcome.status == "correct", outcome.message
    assert outcome.use is not EXERCISES[name].reference and "correct" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_the_check_says_not_done_on_the_student_version(name):
    outcome = ex.check(name, _answer(name, student=True), verbose=False)
    assert outcome.status == "not done" and "not done yet" in outcome.message
    assert outcome.use is EXERCISES[name].reference and not outcome


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_passes_its_own_check(name):
    assert ex.check(name, EXERCISES[name].reference, verbose=False).status == "correct"


MISTAKES = [(n, k) for n in NAMES for k in range(len(EXERCISES[n].mistakes))]


@pytest.mark.parametrize("name", NAMES)
def test_every_exercise_has_at_least_two_planted_mistakes(name):
    assert len(EXERCISES[name].mistakes) >= 2


@pytest.mark.parametrize("name,k", MISTAKES, ids=[f"{n}-{k}" for n, k in MISTAKES])
def test_the_check_fails_with_its_hint_on_each_planted_mistake(name, k):
    mistake = EXERCISES[name].mistakes[k]
    outcome = ex.check(name, mistake.answer, verbose=False)
    assert outcome.status == "wrong", f"{name}: the planted mistake '{mistake.description}' passed the check"
    assert mistake.hint.lower() in outcome.message.lower(), (mistake.description, outcome.message)
    assert outcome.use is EXERCISES[name].reference


def test_a_check_leaves_the_random_state_alone():
    for name in NAMES:
        torch.manual_seed(5)
        np.random.seed(5)
        ex.check(name, _answer(name), verbose=False)
        a, b = torch.rand(3), np.random.rand(3)
        torch.manual_seed(5)
        np.random.seed(5)
        assert torch.equal(a, torch.rand(3)) and np.array_equal(b, np.random.rand(3)), name


def test_checks_by_attribute_and_clear_errors():
    name = NAMES[0]
    assert getattr(ex, f"check_{name}")(EXERCISES[name].reference, verbose=False)
    with pytest.raises(AttributeError):
        ex.check_no_such_exercise
    with pytest.raises(ValueError, match="no exercise"):
        ex.check("no_such_exercise", print)
    with pytest.raises(TypeError, match="takes your function"):
        ex.check(name, 3)


def test_solution_markers_must_be_well_formed():
    good = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n"
    assert solution_blocks(good) == [(1, 3)]
    assert student_source(good) == ("def f(x):\n    # your code here: see the exercise's text above\n"
                                    f"    {PLACEHOLDER}\n")
    with pytest.raises(ValueError, match="never closed"):
        solution_blocks("def f(x):\n    ### BEGIN SOLUTION\n    return x\n", "nb, cell 3")
    with pytest.raises(ValueError, match="never opened"):
        solution_blocks("    return x\n    ### END SOLUTION\n")
    with pytest.raises(ValueError, match="inside"):
        solution_blocks("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n")


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_the_committed_markers_are_well_formed_and_the_student_version_has_no_solution(path, tmp_path):
    student = make_student(path, tmp_path)  # raises on a malformed cell
    text = student.read_text()
    assert "### BEGIN SOLUTION" not in text and "### END SOLUTION" not in text
    names = [n for n, e in EXERCISES.items() if e.notebook == path.stem]
    assert text.count("NotImplementedError") >= len(names)


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_the_student_version_runs_to_the_end_at_smoke(path, tmp_path):
    """With every exercise unanswered, each check says "not done yet" and the notebook goes on with the kit's
    reference."""
    student = make_student(path, tmp_path / "student")
    executed = run_notebook(student, tmp_path / "out.ipynb",
                            {"PROFILE": "smoke", "RESULTS_PATH": str(tmp_path / "results.json")})
    printed = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                      for c in executed["cells"] for o in c.get("outputs", []))
    for name in (n for n, e in EXERCISES.items() if e.notebook == path.stem):
        assert f"{name}: not done yet" in printed, f"{path.stem}: no 'not done yet' printed for {name}"

"""The exercises: each check passes on the notebook's solution, fails with its hint on every planted mistake,
says "not done yet" on the student version, and leaves the notebook's random state alone; the student versions
run to the end at smoke; the solution markers are well formed."""
import json
import re
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
def test_no_other_cell_of_the_student_version_spells_a_solution_line(path, tmp_path):
    """A solution's code lines appear in no code cell of the student version (as notebook 06's from-scratch Grad-CAM
    once repeated the exercise's arithmetic two cells after it); short lines (``return x``) may, and the exercise's
    text may give a line as a hint."""
    import json

    from sslkit.nbtools import read_notebook

    def code(line):
        return " ".join(line.split("#")[0].split())

    solutions = set()
    for cell in read_notebook(path)["cells"]:
        source = "".join(cell["source"])
        for begin, end in solution_blocks(source):
            solutions |= {code(line) for line in source.splitlines()[begin + 1:end] if len(code(line)) >= 30}
    student = "\n".join(code(line) for cell in json.loads(make_student(path, tmp_path).read_text())["cells"]
                        if cell["cell_type"] == "code" for line in "".join(cell["source"]).splitlines())
    assert not [line for line in solutions if line in student]


def test_notebook_06s_from_scratch_grad_cam_calls_the_exercises_arithmetic():
    from sslkit.nbtools import read_notebook

    cell = next("".join(c["source"]) for c in read_notebook(NOTEBOOKS / "06_gradcam.ipynb")["cells"]
                if "teach:gradcam" in c.get("metadata", {}).get("tags", []))
    assert "gradcam_map(saved[\"A\"], saved[\"dA\"])" in cell and ".mean(dim=(2, 3)" not in cell


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


def _energy_by_subtraction(cams, masks):
    return ((cams * (1 - masks)).sum((1, 2)) / cams.sum((1, 2)).clamp(min=1e-12)).mean()  # 1 - bool: torch refuses


def _scale_lr_own_not_implemented(lr, b, b0, rule="linear"):
    if rule == "linear":
        raise NotImplementedError("the linear rule comes later")
    return lr * (b / b0) ** 0.5


def test_only_the_placeholder_means_not_done():
    """The placeholder's NotImplementedError (the student version's message, or nbgrader's bare one) means "not
    done yet"; one raised by torch or by the learner's own code is an error of the answer, with its message."""
    def bare(*args):
        raise NotImplementedError()

    def placeholder(*args):
        raise NotImplementedError("your code here")

    for stub in (bare, placeholder):
        assert ex.check("scale_lr", stub, verbose=False).status == "not done"
    outcome = ex.check("energy_in_mask", _energy_by_subtraction, verbose=False)
    assert outcome.status == "wrong" and "not done" not in outcome.message
    assert "raised NotImplementedError" in outcome.message and "`~`" in outcome.message, outcome.message
    outcome = ex.check("scale_lr", _scale_lr_own_not_implemented, verbose=False)
    assert outcome.status == "wrong" and "the linear rule comes later" in outcome.message, outcome.message
    assert ex.is_placeholder(NotImplementedError("your code here")) and ex.is_placeholder(NotImplementedError())
    assert not ex.is_placeholder(NotImplementedError("unknown rule 'x'")) and not ex.is_placeholder(ValueError())


def _sol(name):
    return EXERCISES[name].reference


# answers whose failure came from the check's own code (compared in another dtype, None turned into a tensor, ints
# read as rows) and was shown as an error the answer raised: each gets a hint about what it returned
CHECK_ERRORS = [
    ("ntxent", lambda z0, z1, t=0.5: _sol("ntxent")(z0.double(), z1.double(), t), "return a float32 tensor"),
    ("simsiam_loss", lambda *a: _sol("simsiam_loss")(*(x.double() for x in a)), "return a float32 tensor"),
    ("patchify", lambda x, p: _sol("patchify")(x, p).double(), "return a float32 tensor"),
    ("label_subset", lambda labels, n, seed, c: None, "not NoneType"),
    ("best_runs", lambda rows, metric, lower=False: [i for i, r in enumerate(rows) if r.get(metric) is not None][:1],
     "return the rows (dicts), not int"),
    ("best_runs", lambda rows, metric, lower=False: [r["METHOD"] for r in _sol("best_runs")(rows, metric, lower)],
     "return the rows (dicts), not str"),
]


@pytest.mark.parametrize("name,answer,hint", CHECK_ERRORS, ids=[f"{n}-{k}" for k, (n, _, _) in enumerate(CHECK_ERRORS)])
def test_an_error_of_the_checks_own_code_is_not_blamed_on_the_answer(name, answer, hint):
    outcome = ex.check(name, answer, verbose=False)
    assert outcome.status == "wrong" and "raised" not in outcome.message, outcome.message
    assert hint.lower() in outcome.message.lower(), outcome.message


def test_indices_are_a_1d_integer_tensor_or_list():
    """One helper reads the indices of label_subset (nb07) and shard (nb05): a 1-d tensor or list of integers."""
    from sslkit.exercises import nb05, nb07

    assert nb05.as_indices is nb07.as_indices is ex.as_indices
    assert torch.equal(ex.as_indices([3, 1], "indices"), torch.tensor([3, 1]))
    assert ex.as_indices([], "indices").dtype == torch.long
    assert ex.as_indices(torch.tensor([2], dtype=torch.int32), "indices").dtype == torch.long
    for wrong, hint in ((None, "not NoneType"), ("0, 1", "not str"), (torch.tensor([[1], [2]]), "shape (2, 1)"),
                        (torch.tensor([1.0, 2.0]), "torch.float32"), (torch.tensor([True, False]), "torch.bool")):
        with pytest.raises(ex.Hint, match=re.escape(hint)):
            ex.as_indices(wrong, "indices")


def test_macro_f1_cases_tell_the_wrong_formulations_apart():
    """On the first case where a wrong formulation of macro-F1 is wrong, no other one gives the same value, so the
    check names it (a loop over labels.unique() was taken for sklearn's average='weighted')."""
    from sslkit.exercises.nb07 import _f1_cases, _f1_variants, macro_f1_reference

    cases = list(_f1_cases(torch.Generator().manual_seed(0)))
    values = [(macro_f1_reference(*case[:3]), _f1_variants(*case[:3]), case[3]) for case in cases]
    names = list(values[0][1])
    for a in names:
        first = next(((v, what) for want, v, what in values if abs(v[a] - want) > 1e-5), None)
        assert first is not None, f"no case where {a} is wrong"
        v, what = first
        same = [b for b in names if b != a and abs(v[b] - v[a]) <= 1e-5]
        assert not same, f"{what}: {a} and {same} give the same value, {v[a]:.4f}"


def test_macro_f1_names_a_class_dropped_for_being_absent_from_the_labels():
    def over_labels_present(labels, predictions, num_classes):
        f1 = []
        for k in labels.unique():
            tp = ((predictions == k) & (labels == k)).sum().item()
            fp = ((predictions == k) & (labels != k)).sum().item()
            fn = ((predictions != k) & (labels == k)).sum().item()
            p, r = tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0
            f1.append(2 * p * r / (p + r) if p + r else 0.0)
        return sum(f1) / len(f1)

    outcome = ex.check("macro_f1", over_labels_present, verbose=False)
    assert outcome.status == "wrong" and "absent from the labels" in outcome.message, outcome.message
    assert "weighted" not in outcome.message


def test_macro_f1_refuses_sklearns_mean_over_the_classes_that_occur():
    """sklearn's f1_score without labels= averages over the classes in the labels or the predictions only; the
    exercise's macro-F1 is the mean of all num_classes scores."""
    from sklearn.metrics import f1_score

    outcome = ex.check("macro_f1", lambda labels, predictions, num_classes: f1_score(
        labels, predictions, average="macro", zero_division=0), verbose=False)
    assert outcome.status == "wrong" and "neither in the labels nor predicted" in outcome.message, outcome.message


def test_update_momentum_checks_that_the_buffers_are_left_alone():
    def averages_float_buffers(online, target, m):
        with torch.no_grad():
            source = online.state_dict()
            for key, value in target.state_dict().items():
                if value.is_floating_point():
                    value.mul_(m).add_(source[key], alpha=1 - m)

    outcome = ex.check("update_momentum", averages_float_buffers, verbose=False)
    assert outcome.status == "wrong" and "running statistics are left alone" in outcome.message, outcome.message


def test_ntxent_must_keep_its_gradient():
    def item_then_tensor(z0, z1, t=0.5):
        return torch.tensor(_sol("ntxent")(z0, z1, t).item())

    outcome = ex.check("ntxent", item_then_tensor, verbose=False)
    assert outcome.status == "wrong" and "no gradient" in outcome.message, outcome.message


def test_shard_must_return_1d_integer_indices():
    def float_column(order, rank, w):
        return order[:len(order) - len(order) % w][rank::w].float()[:, None]

    outcome = ex.check("shard", float_column, verbose=False)
    assert outcome.status == "wrong" and "1-d tensor (or list) of integer" in outcome.message, outcome.message


# the checks whose outcome labels what a notebook prints or draws: "yours" only when the check passed
LABELLED = [("02_contrastive", "ntxent"), ("04_masked", "random_token_mask"), ("05_scaling", "scale_lr"),
            ("05_scaling", "shard"), ("07_finetune", "macro_f1")]


@pytest.mark.parametrize("notebook,name", LABELLED, ids=[n for _, n in LABELLED])
def test_a_notebook_calls_the_output_yours_only_when_the_check_passed(notebook, name):
    nb = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert f"{name}_check = sslkit.exercises.check_{name}(" in code, f"{notebook}: the Outcome of check_{name} is kept"
    assert re.search(rf"= \"yours?\" if {name}_check else \"the kit's\"", code), \
        f"{notebook}: no label chosen by {name}_check"
    for fixed in ("(your rule:", "process {rank}: yours", "macro-F1 (yours)", "f\"your mask"):
        assert fixed not in code, f"{notebook}: {fixed!r} labels the output yours even when the check failed"

"""The book (``make book``, ``sslkit.book``): every lesson page with its figures, every link resolving, the index
listing every notebook; the teacher's guide listing every exercise with its difficulty and quoting only recorded
numbers; its grading scripts working.

The book is built once per test session from the stored lesson runs (``results/executed/``) and, for the other
notebooks, from the same smoke runs ``tests/test_notebooks.py`` checks (the ``smoke_runs`` fixture), so it adds
only the rendering (about half a minute) to ``make test``.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sslkit.book as book
import sslkit.bookpages as bookpages
import sslkit.exercises as ex
from sslkit.nbtools import make_student

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
GUIDE = ROOT / "docs" / "teaching.md"


@pytest.fixture(scope="module")
def built(smoke_runs, tmp_path_factory):
    """(book folder, lessons): the book as ``make book`` builds it, with the tests' smoke runs."""
    out = tmp_path_factory.mktemp("book")
    runs = {p.stem: smoke_runs.run(p) for p in NOTEBOOKS if book.stored_run(p.stem, book.RESULTS / "executed") is None}
    lessons = book.build(out, runs=runs, log=lambda *a: None)
    return out, {lesson.stem: lesson for lesson in lessons}


def _markdown_images(nb) -> int:
    return sum(len(re.findall(r"!\[[^\]]*\]\(|<img\b", "".join(c["source"]))) for c in nb["cells"]
               if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_page_has_its_figures_and_says_which_run_it_shows(built, path):
    out, lessons = built
    lesson = lessons[path.stem]
    page = (out / lesson.page).read_text(encoding="utf-8")
    nb = json.loads(lesson.run.read_text(encoding="utf-8"))
    figures = book.image_outputs(nb)
    assert figures > 0, f"{lesson.run.name} has no figure output: the page would show none"
    images = re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', page)
    assert len(images) == figures + _markdown_images(nb), (
        f"{lesson.page}: {len(images)} <img>, but the run has {figures} image outputs")
    assert all(src.startswith("data:image/") for src in images), f"{lesson.page}: a figure is not embedded"
    if lesson.run_recorded:
        assert "This page is the recorded lesson run" in page
    else:
        assert f"come from a {lesson.run_profile} run" in page, f"{lesson.page} does not say its figures are not " \
                                                                f"the recorded lesson run's"
    for label, value in bookpages.headline_rows(lesson):  # the recorded lesson run's numbers, beside the figures
        assert f"<td>{value}</td>" in page, f"{lesson.page} lacks the recorded {label}"


def test_the_stored_lesson_runs_are_recorded_runs_without_errors():
    stored = sorted((book.RESULTS / "executed").glob("*.ipynb"))
    for path in stored:
        stem = path.name.split(".")[0]
        lesson = next(x for x in book.lessons() if x.stem == stem)
        assert book._is_recorded(path, lesson, book.RESULTS), (
            f"{path.name} is not the run that wrote results/{stem}.lesson.json (PROFILE lesson, RESULTS_PATH "
            f"../results/{stem}.lesson.json): store the executed notebook of the recorded run")
        nb = json.loads(path.read_text(encoding="utf-8"))
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name} holds an error output"


def test_every_local_link_resolves(built):
    out, _ = built
    assert book.check_links(out) == []
    pages = {p.name for p in out.glob("*.html")}
    assert {"index.html", "teaching.html", "glossary.html"} <= pages


def test_the_index_lists_every_notebook_with_its_time_and_results(built):
    out, lessons = built
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'href="teaching.html"' in index and 'href="glossary.html"' in index
    for path in NOTEBOOKS:
        lesson = lessons[path.stem]
        assert f'href="{lesson.page}"' in index, f"the index does not link {lesson.page}"
        row = index[index.index(f'href="{lesson.page}"'):].split("</tr>")[0]
        assert lesson.recorded is not None, f"results/{path.stem}.lesson.json is missing"
        assert bookpages.minutes(lesson.recorded["wall_time_s"]) in row
        assert all(f"<strong>{value}</strong>" in row for _, value in bookpages.headline_rows(lesson))
    assert list(lessons) == IDS


def test_out_or_executed_naming_a_file_is_a_clear_error(tmp_path, capsys):
    """``--out`` (or ``--executed``) naming an existing plain file: the message and exit 2, before anything is
    built."""
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for argv, message in [(["--out", str(afile)], "is a file; give a folder for the site"),
                          (["--out", str(afile / "site")], "cannot make that folder"),
                          (["--out", str(tmp_path / "site"), "--executed", str(afile)], "is a file; give the folder"),
                          (["--out", str(tmp_path / "site"), "--executed", str(tmp_path / "no_such")],
                           "no_such: no such folder; give the folder of stored executed runs")]:
        with pytest.raises(SystemExit) as e:
            book.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and "Traceback" not in err, (argv, err)
    assert afile.read_text() == "not a folder" and not (tmp_path / "site").exists()


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "a.html").write_text('<a href="b.html#there">b</a> <a href="missing.html">m</a> <a href="#top">t</a>'
                                     '<a href="https://example.org/x">x</a> <img src="data:image/png;base64,AA">')
    (tmp_path / "b.html").write_text('<h1 id="here">b</h1>')
    broken = book.check_links(tmp_path)
    assert len(broken) == 3, broken
    assert any("missing.html" in b for b in broken) and any("'there'" in b for b in broken) \
        and any("'top'" in b for b in broken)


def test_every_headline_result_is_in_its_recorded_run():
    assert set(bookpages.HEADLINES) == set(IDS), \
        "every notebook needs its headline results in sslkit.bookpages.HEADLINES"
    for stem, rows in bookpages.HEADLINES.items():
        metrics = json.loads((book.RESULTS / f"{stem}.lesson.json").read_text())["metrics"]
        missing = [name for name, _, _ in rows if name not in metrics]
        assert not missing, f"results/{stem}.lesson.json has no {missing}: update sslkit.bookpages.HEADLINES"


def test_hide_solutions_shows_the_student_versions_placeholder():
    nb = json.loads((ROOT / "notebooks" / "02_contrastive.ipynb").read_text(encoding="utf-8"))
    assert "### BEGIN SOLUTION" in json.dumps(nb)
    hidden = json.dumps(book._hide_solutions(nb, "02_contrastive.ipynb"))
    assert "### BEGIN SOLUTION" not in hidden and "your code here" in hidden


def test_links_between_sources_become_links_between_pages(tmp_path):
    pages = {(ROOT / "notebooks" / "02_contrastive.ipynb").resolve(): "02_contrastive.html",
             (ROOT / "docs" / "glossary.md").resolve(): "glossary.html"}
    html = '<a href="../notebooks/02_contrastive.ipynb#Section">x</a><a href="glossary.md">g</a><a href="#a">a</a>'
    assert bookpages.rewrite_links(html, ROOT / "docs", pages) == (
        '<a href="02_contrastive.html#Section">x</a><a href="glossary.html">g</a><a href="#a">a</a>')


# ---------------------------------------------------------------------------------------------------------
# the teacher's guide


def _sections() -> dict:
    """The guide's per-notebook sections: "NN" -> text."""
    text = GUIDE.read_text(encoding="utf-8")
    parts = re.split(r"^### (\d\d) · .*$", text, flags=re.M)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


def test_the_guide_has_a_section_per_notebook_with_its_measured_time():
    sections = _sections()
    assert sorted(sections) == [stem[:2] for stem in IDS]
    for stem in IDS:
        section = sections[stem[:2]]
        for part in ("**Learning objectives.**", "**Prerequisites.**", "**What to discuss.**"):
            assert part in section, f"the guide's section {stem[:2]} lacks {part}"
        found = re.search(r"\*\*Measured lesson time\*\*: ([\d.]+ (?:min|s))", section)
        recorded = json.loads((book.RESULTS / f"{stem}.lesson.json").read_text())["wall_time_s"]
        expected = bookpages.minutes(recorded)
        assert found and found.group(1) == expected, (
            f"section {stem[:2]}: the lesson time should read {expected} (results/{stem}.lesson.json)")


def test_every_registered_exercise_is_in_the_guide_with_its_difficulty():
    sections = _sections()
    for name, e in ex.exercises().items():
        section = sections[e.notebook[:2]]
        rows = [line for line in section.splitlines() if line.startswith(f"| `{name}` |")]
        assert rows, f"docs/teaching.md: no row '| `{name}` | ...' in section {e.notebook[:2]}; add the exercise"
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        assert cells[2] == str(e.difficulty), (
            f"docs/teaching.md gives {name} difficulty {cells[2]}, registered {e.difficulty}")
    listed = {m for s in sections.values() for m in re.findall(r"^\| `(\w+)` \|", s, flags=re.M)}
    stale = listed - set(ex.exercises())
    assert not stale, f"docs/teaching.md lists exercises that are not registered: {sorted(stale)}"


def _close(number: str, value: float) -> bool:
    """``number`` is ``value`` formatted to as many decimals as ``number`` has (as the book formats it)."""
    decimals = len(number.split(".")[1])
    return number == f"{value:.{decimals}f}"


def test_the_guide_quotes_only_recorded_numbers():
    """Every number with a decimal point in a notebook's section is one of its recorded metrics, rounded (the
    measured lesson time is checked above); a lesson time anywhere in the guide is one of the recorded ones."""
    sections = _sections()
    for stem in IDS:
        metrics = json.loads((book.RESULTS / f"{stem}.lesson.json").read_text())["metrics"]
        text = re.sub(r"\*\*Measured lesson time\*\*: [^\n]*", "", sections[stem[:2]])
        text = re.sub(r"^\| `.*$", "", text, flags=re.M)  # the exercise tables: the registry's words, not results
        text = re.sub(r"`[^`]*`", "", text)  # code (parameter values) is not a result
        for number in re.findall(r"-?\d+\.\d+", text):
            assert any(_close(number, v) for v in metrics.values()), (
                f"docs/teaching.md, section {stem[:2]}: {number} is not in results/{stem}.lesson.json; quote the "
                f"recorded value, or write the number without a decimal point if it is not a result")
    times = {bookpages.minutes(json.loads((book.RESULTS / f"{s}.lesson.json").read_text())["wall_time_s"]) for s in IDS}
    times |= {bookpages.minutes(json.loads(p.read_text())["wall_time_s"])  # notebooks run with REPLAY = True
              for p in (book.RESULTS / "replay").glob("*.lesson.replayed.json")}
    times |= {bookpages.minutes(json.loads(p.read_text())["wall_time_s"])  # 02 and 03 with every training trained
              for p in (book.RESULTS / "replay").glob("*.lesson.trained.json")}
    for quoted in re.findall(r"\d+\.\d+ min", GUIDE.read_text(encoding="utf-8")):
        assert quoted in times, f"docs/teaching.md quotes a lesson time {quoted} that no recorded run took"


def _guide_script(first_line: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if b.startswith(first_line)]
    assert len(found) == 1, f"docs/teaching.md should hold one python block starting {first_line!r}"
    return found[0]


def test_the_guides_grading_script_grades_solutions_and_student_versions(tmp_path):
    script = tmp_path / "grade.py"
    script.write_text(_guide_script("# grade.py"))
    graded = sorted({e.notebook for e in ex.exercises().values()})[:2]  # two notebooks: the checks are quick
    for stem in graded:
        solved = tmp_path / "submissions" / "solved"
        solved.mkdir(parents=True, exist_ok=True)
        (solved / f"{stem}.ipynb").write_text((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
        make_student(ROOT / "notebooks" / f"{stem}.ipynb", tmp_path / "submissions" / "student")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "submissions")], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()[1:]]
    names = [n for n, e in ex.exercises().items() if e.notebook in graded]
    assert {(r[0], r[2], r[4]) for r in rows} == {("solved", n, "correct") for n in names} | {
        ("student", n, "not done") for n in names}


def test_the_guides_nbgrader_script_marks_every_exercise(tmp_path):
    import nbformat

    script = tmp_path / "nbgrader_source.py"
    script.write_text(_guide_script("# nbgrader_source.py"))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "source")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for name, e in ex.exercises().items():
        nb = nbformat.read(tmp_path / "source" / f"{e.notebook}.ipynb", as_version=4)
        nbformat.validate(nb)
        grade_ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
        at = grade_ids.index(name)
        assert nb.cells[at].metadata["nbgrader"]["solution"] and f"check_{name}(" in nb.cells[at + 1].source
        test = nb.cells[at + 2]
        assert test.metadata["nbgrader"]["points"] == e.difficulty and e.answer_name in test.source


def test_the_glossary_defines_the_words_and_the_readme_links_the_teaching_material():
    glossary = (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8")
    terms = ["Linear probe", "kNN evaluation", "Collapse", "EMA, momentum encoder", "Stop-gradient", "Projection head",
             "Predictor", "NT-Xent", "InfoNCE", "Temperature", "LP-FT", "ROAD", "Grad-CAM", "Masked image modeling",
             "Pretext task", "Label efficiency", "Macro-F1", "Domain shift", "Distillation", "Quantization"]
    defined = re.findall(r"^\*\*(.+?)\*\*", glossary, flags=re.M)
    assert not [t for t in terms if t not in defined], [t for t in terms if t not in defined]
    assert defined == sorted(defined, key=str.lower), "keep the glossary in alphabetical order"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for link in ("docs/teaching.md", "docs/glossary.md", "make student", "make book", "LICENSE"):
        assert link in readme, f"README.md does not mention {link}"


def test_an_unknown_profile_is_a_clear_error_before_anything_is_built(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        book.main(["--profile", "lesosn", "--out", str(tmp_path / "site")])
    assert e.value.code == 2 and "invalid choice: 'lesosn' (choose from 'smoke', 'lesson', 'full')" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()

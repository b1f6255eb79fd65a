"""The book: the lessons as a static HTML site, with their figures and numbers, built offline (``make book``).

    python -m sslkit.book                       # book/index.html and one page per notebook
    python -m sslkit.book --out site --executed my_runs --profile smoke --hide-solutions

Each lesson page is an executed notebook rendered by nbconvert (JupyterLab's look, figures embedded in the
page as data URIs, so a page is one self-contained file). Which run a page shows, first found:

1. a stored executed run in ``--executed`` (default ``results/executed/``, where the recorded lesson runs are
   committed as ``NN_name.lesson.ipynb``), shown as it ran;
2. a run the book makes at ``--profile`` (default ``smoke``: seconds per notebook), kept in ``OUT/_runs/`` and
   reused while it is newer than the notebook and every sslkit module (``--fresh`` runs it again).

Every page shows the recorded lesson run's numbers (``results/NN_name.lesson.json``: its time, its headline
results, all its metrics); a page whose figures come from another run (a smoke run) says so at its top. The
index page lists the sequence with what each notebook teaches, its measured lesson time and headline results;
``teaching.html`` and ``glossary.html`` render ``docs/teaching.md`` and ``docs/glossary.md``. Links between
the sources (``../notebooks/02_contrastive.ipynb``, ``glossary.md``) become links between the pages, and
``check_links`` lists every local link of the book that does not resolve (``python -m sslkit.book`` fails on
one).

Reading the pages needs no network; with one, MathJax typesets the formulas of notebooks 02 and 06 (offline
they show as TeX). Interactive widgets need a kernel: a page says where one was, and headless runs draw the
widgets' static figures instead.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from .bookpages import GENERATOR, index_body, make_exporter, nav, recorded_box, render, rewrite_links
from .config import PROFILES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS, RESULTS, DOCS = ROOT / "notebooks", ROOT / "results", ROOT / "docs"
# the docs rendered as pages: source -> page
DOC_PAGES = {"teaching.md": "teaching.html", "glossary.md": "glossary.html"}


@dataclass
class Lesson:
    """One notebook of the sequence and the run its page shows."""

    stem: str  # e.g. "02_contrastive"
    notebook: Path
    title: str  # the notebook's title, without the leading "# "
    teaches: str  # HTML: the notebook's "In this notebook you will" list (or its first paragraph)
    recorded: dict | None  # results/<stem>.lesson.json, the recorded lesson run (None: not recorded)
    run: Path | None = None  # the executed notebook the page shows
    run_profile: str = "?"  # the profile that run ran at
    run_stored: bool = False  # True: a stored executed run (--executed), False: made for the book
    run_recorded: bool = False  # True: the stored run is the recorded lesson run (it wrote results/<stem>.lesson.json)

    @property
    def page(self) -> str:
        return f"{self.stem}.html"


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _markdown(text: str) -> str:
    from nbconvert.filters.markdown import markdown2html

    return markdown2html(text)


def _intro(nb: dict, path: Path) -> tuple[str, str]:
    """(title, what it teaches as HTML) from the notebook's first cell."""
    first = _source(nb["cells"][0]) if nb["cells"] else ""
    lines = first.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"{path.name} must open with a markdown title line '# NN · ...' (the book's index uses it)")
    title = lines[0][2:].strip()
    marker = re.search(r"\*\*In this notebook you will\*\*\n(.*?)(?:\n\s*\n|\Z)", first, re.S)
    if marker:
        return title, _markdown(marker.group(1))
    paragraph = first.split("\n\n")[1] if "\n\n" in first else ""
    return title, _markdown(paragraph)


def lessons(notebooks_dir: Path = NOTEBOOKS, results_dir: Path = RESULTS) -> list[Lesson]:
    """The notebooks ``NN_*.ipynb`` in order, with their titles and recorded lesson runs."""
    out = []
    for path in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        title, teaches = _intro(nb, path)
        recorded_path = Path(results_dir) / f"{path.stem}.lesson.json"
        recorded = json.loads(recorded_path.read_text()) if recorded_path.exists() else None
        out.append(Lesson(path.stem, path, title, teaches, recorded))
    if not out:
        raise FileNotFoundError(f"no notebooks NN_*.ipynb in {notebooks_dir}")
    return out


def stored_run(stem: str, executed_dir: Path | None) -> Path | None:
    """The stored executed run of notebook ``stem`` in ``executed_dir``: ``stem.lesson.ipynb`` first, then
    ``stem.ipynb``, then ``stem.<other>.ipynb``; None when there is none."""
    if executed_dir is None or not Path(executed_dir).is_dir():
        return None
    found = sorted(Path(executed_dir).glob(f"{stem}.*ipynb"),
                   key=lambda p: (p.name != f"{stem}.lesson.ipynb", p.name != f"{stem}.ipynb", p.name))
    return found[0] if found else None


def _parameters(executed: Path) -> dict:
    """The parameters papermill ran a notebook with (empty for a notebook run otherwise)."""
    meta = json.loads(executed.read_text(encoding="utf-8")).get("metadata", {})
    return meta.get("papermill", {}).get("parameters", {}) or {}


def _run_profile(executed: Path, results: Path | None) -> str:
    """The profile a run ran at: its results file says (it sees $SSLKIT_PROFILE), else papermill's parameters."""
    if results is not None and Path(results).exists():
        return json.loads(Path(results).read_text()).get("profile", "?")
    return str(_parameters(executed).get("PROFILE", "?"))


def _is_recorded(executed: Path, lesson: "Lesson", results_dir: Path) -> bool:
    """Whether a stored run is the recorded lesson run: it ran at lesson and wrote results/<stem>.lesson.json
    (its RESULTS_PATH is relative to the notebook's folder, where papermill ran it)."""
    params = _parameters(executed)
    path = params.get("RESULTS_PATH")
    return params.get("PROFILE") == "lesson" and isinstance(path, str) and \
        (lesson.notebook.parent / path).resolve() == (Path(results_dir) / f"{lesson.stem}.lesson.json").resolve()


def _newest_source(notebook: Path) -> float:
    """When the notebook or the code it runs (sslkit, the book's own modules aside) last changed."""
    package = Path(__file__).resolve().parent
    own = {Path(__file__).resolve(), package / "bookpages.py"}
    code = [p.stat().st_mtime for p in package.rglob("*.py") if p.resolve() not in own]
    return max([notebook.stat().st_mtime] + code)


def make_run(lesson: Lesson, runs_dir: Path, profile: str, fresh: bool = False, log=print) -> tuple[Path, Path]:
    """Execute the lesson's notebook at ``profile`` into ``runs_dir`` (or reuse a run newer than its sources);
    returns (executed notebook, results file)."""
    from .nbtools import run_notebook

    runs_dir.mkdir(parents=True, exist_ok=True)
    executed, results = runs_dir / f"{lesson.stem}.{profile}.ipynb", runs_dir / f"{lesson.stem}.{profile}.json"
    if not fresh and executed.exists() and results.exists() \
            and executed.stat().st_mtime > _newest_source(lesson.notebook):
        log(f"  {lesson.stem}: reusing its {profile} run in {runs_dir} (newer than the notebook and sslkit)")
        return executed, results
    start = time.perf_counter()
    partial = runs_dir / f"{lesson.stem}.{profile}.partial.ipynb"  # a failed run never passes for a finished one
    # relative to the notebook's folder, where papermill runs it: the page shows no path of this machine
    results_path = os.path.relpath(results.resolve(), lesson.notebook.parent.resolve())
    run_notebook(lesson.notebook, partial, {"PROFILE": profile, "RESULTS_PATH": results_path})
    partial.replace(executed)
    log(f"  {lesson.stem}: executed at {profile} in {time.perf_counter() - start:.0f} s")
    return executed, results


def _changed_cells(run: dict, notebook: dict) -> int:
    """How many cells of the notebook as it is now differ from (or are missing in) the run's."""
    ran = [_source(c) for c in run["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    now = [_source(c) for c in notebook["cells"]]
    matcher = difflib.SequenceMatcher(None, ran, now, autojunk=False)
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal")


def image_outputs(nb: dict) -> int:
    """How many outputs of a notebook are raster images (each becomes one <img> on its page)."""
    kinds = ("image/png", "image/jpeg", "image/gif")
    return sum(any(k in o.get("data", {}) for k in kinds) for c in nb["cells"] for o in c.get("outputs", []))


# ---------------------------------------------------------------------------------------------------------
# the site (its pages' HTML: sslkit.bookpages)


def _hide_solutions(nb: dict, where: str) -> dict:
    from .nbtools import student_source

    for k, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") == "code":
            cell["source"] = student_source(_source(cell), f"{where}, cell {k}")
    return nb


def build(out: str | Path = ROOT / "book", executed_dir: str | Path | None = RESULTS / "executed",
          profile: str = "smoke", runs: dict | None = None, fresh: bool = False, hide_solutions: bool = False,
          notebooks_dir: Path = NOTEBOOKS, results_dir: Path = RESULTS, docs_dir: Path = DOCS,
          log=print) -> list[Lesson]:
    """Build the book into ``out``; returns the lessons with the runs their pages show.

    Args:
        executed_dir: stored executed runs (``NN_name.lesson.ipynb``); None: use none.
        profile: the profile of the runs made for notebooks without a stored run.
        runs: runs already made, ``{stem: (executed notebook, results file)}`` (the tests' smoke runs): used for
            notebooks without a stored run instead of executing them.
        fresh: execute again instead of reusing ``OUT/_runs/``.
        hide_solutions: show each exercise's solution as the student version's placeholder.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.html"):  # pages of an earlier build (a renamed notebook's page must not linger)
        if f'<meta name="generator" content="{GENERATOR}">' in old.read_text(encoding="utf-8", errors="replace"):
            old.unlink()
    lessons_ = lessons(notebooks_dir, results_dir)
    runs = dict(runs or {})
    for lesson in lessons_:
        stored = stored_run(lesson.stem, Path(executed_dir) if executed_dir else None)
        if stored is not None:
            lesson.run, lesson.run_stored = stored, True
            lesson.run_profile = _run_profile(stored, None)
            lesson.run_recorded = _is_recorded(stored, lesson, results_dir)
        else:
            executed, results = runs[lesson.stem] if lesson.stem in runs else \
                make_run(lesson, out / "_runs", profile, fresh, log)
            lesson.run, lesson.run_profile = Path(executed), _run_profile(Path(executed), results)

    # every source that has a page, so links between sources become links between pages
    pages = {lesson.notebook.resolve(): lesson.page for lesson in lessons_}
    pages.update({(Path(docs_dir) / src).resolve(): page for src, page in DOC_PAGES.items()})
    exporter = make_exporter()
    for i, lesson in enumerate(lessons_):
        nb = json.loads(lesson.run.read_text(encoding="utf-8"))
        changed = _changed_cells(nb, json.loads(lesson.notebook.read_text(encoding="utf-8")))
        if hide_solutions:
            nb = _hide_solutions(nb, lesson.run.name)
        header = nav(lessons_, i) + recorded_box(lesson, changed)
        footer = nav(lessons_, i)
        page = render(exporter, nb, lesson.title, header, footer, source_dir=lesson.notebook.parent)
        (out / lesson.page).write_text(rewrite_links(page, lesson.notebook.parent, pages), encoding="utf-8")
    for src, page_name in DOC_PAGES.items():
        path = Path(docs_dir) / src
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the book renders it as {page_name}")
        text = path.read_text(encoding="utf-8")
        title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), path.stem)
        nb = {"cells": [{"cell_type": "markdown", "id": "doc", "metadata": {}, "source": text}], "metadata": {},
              "nbformat": 4, "nbformat_minor": 5}
        page = render(exporter, nb, title, nav(lessons_, None), source_dir=path.parent)
        (out / page_name).write_text(rewrite_links(page, path.parent, pages), encoding="utf-8")
    index = render(exporter, {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
                   "sslkit: the lessons", nav(lessons_, None) + index_body(lessons_), source_dir=NOTEBOOKS)
    (out / "index.html").write_text(index, encoding="utf-8")
    return lessons_


# ---------------------------------------------------------------------------------------------------------
# link check


class _Links(HTMLParser):
    """Collects a page's ids and the targets of its href and src attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)
            elif name in ("href", "src") and value is not None:
                self.links.append(value)


def check_links(out: str | Path) -> list[str]:
    """Every local link of the book's pages that does not resolve: a missing file, or a missing #anchor in
    the page it points to; empty when all resolve. External (http:, data:, ...) links are not checked."""
    out = Path(out)
    parsed = {}
    for page in sorted(out.glob("*.html")):
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        parsed[page.name] = parser
    broken = []
    for name, parser in parsed.items():
        for link in parser.links:
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", link):
                continue
            path, _, fragment = link.partition("#")
            target = name if path == "" else path
            file = (out / target)
            if not file.exists():
                broken.append(f"{name}: {link!r} (no file {target})")
            elif fragment and target in parsed and fragment not in parsed[target].ids:
                broken.append(f"{name}: {link!r} (no id {fragment!r} in {target})")
            elif link == "":
                broken.append(f"{name}: an empty link")
    return broken


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sslkit.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "book"), help="folder of the site (default: book/)")
    parser.add_argument("--executed", default=str(RESULTS / "executed"),
                        help="folder of stored executed runs, NN_name.lesson.ipynb (default: results/executed/)")
    parser.add_argument("--profile", default="smoke", choices=PROFILES,
                        help="profile of the runs made for notebooks without a stored run (default: smoke)")
    parser.add_argument("--fresh", action="store_true", help="execute again instead of reusing OUT/_runs/")
    parser.add_argument("--hide-solutions", action="store_true",
                        help="show each exercise's solution as the student version's placeholder")
    args = parser.parse_args(argv)
    if Path(args.executed).exists() and not Path(args.executed).is_dir():
        parser.error(f"--executed {args.executed} is a file; give the folder of stored executed runs")
    if not Path(args.executed).exists() and args.executed != parser.get_default("executed"):  # a misspelt folder
        parser.error(f"--executed {args.executed}: no such folder; give the folder of stored executed runs (default "
                     f"results/executed/), or leave the flag out")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder for the site (a missing one is made)")
    try:  # a parent that is a file, or no permission: the message, before any notebook runs
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parser.error(f"--out {args.out}: cannot make that folder ({e.strerror}); give a folder you can write to")
    start = time.perf_counter()
    built = build(args.out, args.executed, args.profile, fresh=args.fresh, hide_solutions=args.hide_solutions)
    broken = check_links(args.out)
    for lesson in built:
        print(f"  {lesson.page}: {'stored' if lesson.run_stored else 'made'} {lesson.run_profile} run ({lesson.run})")
    print(f"book: {len(built) + 1 + len(DOC_PAGES)} pages in {args.out} in {time.perf_counter() - start:.0f} s; "
          f"open {Path(args.out) / 'index.html'}")
    if broken:
        print(f"{len(broken)} broken link(s):\n  " + "\n  ".join(broken), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

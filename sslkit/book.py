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
import html
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS, RESULTS, DOCS = ROOT / "notebooks", ROOT / "results", ROOT / "docs"
GENERATOR = "sslkit.book"  # the <meta name="generator"> of every page: a rebuild removes only pages it wrote
# the docs rendered as pages: source -> page
DOC_PAGES = {"teaching.md": "teaching.html", "glossary.md": "glossary.html"}

# headline results of each lesson run, as the index and the pages show them: (metric, what it is, format)
HEADLINES = {
    "00_welcome": [("knn_raw_pixels", "kNN on raw pixels (chance: 0.10)", "{:.3f}")],
    "01_pretext": [("knn_rotation", "rotation, kNN", "{:.3f}"), ("knn_jigsaw", "jigsaw, kNN", "{:.3f}"),
                   ("knn_raw_pixels", "raw pixels, kNN", "{:.3f}")],
    "02_contrastive": [("knn_simclr", "SimCLR, kNN", "{:.3f}"), ("linear_simclr", "SimCLR, linear probe", "{:.3f}"),
                       ("knn_moco", "MoCo v2, kNN", "{:.3f}")],
    "03_non_contrastive": [("knn_simsiam", "SimSiam, kNN", "{:.3f}"), ("knn_byol", "BYOL, kNN", "{:.3f}"),
                           ("knn_vicreg", "VICReg, kNN", "{:.3f}"), ("knn_barlowtwins", "Barlow Twins, kNN", "{:.3f}"),
                           ("knn_dino", "DINO, kNN", "{:.3f}"),
                           ("knn_simsiam_no_stopgrad", "SimSiam without stop-gradient (collapsed), kNN", "{:.3f}")],
    "04_masked": [("linear_mae", "MAE, linear probe", "{:.3f}"),
                  ("finetune_mae_10pct", "MAE fine-tuned with 10% of the labels", "{:.3f}"),
                  ("finetune_scratch_10pct", "the same ViT from scratch, 10% of the labels", "{:.3f}")],
    "05_scaling": [("speedup_bf16", "bf16 training step, speed-up over fp32", "{:.2f}x"),
                   ("memory_ratio_bf16", "bf16 peak memory, fp32 = 1", "{:.2f}"),
                   ("resume_identical", "resumed run ends with the uninterrupted run's weights (1: yes)", "{:.0f}"),
                   ("ddp_world_size", "torchrun processes", "{:.0f}")],
    "06_gradcam": [("cam_in_mask_ssl", "SimCLR's Grad-CAM energy inside the object", "{:.3f}"),
                   ("cam_in_mask_supervised", "supervised network's, the same", "{:.3f}"),
                   ("cam_in_mask_random_init", "random network's, the same", "{:.3f}"),
                   ("mask_fraction", "the objects' share of the image (a map's chance level)", "{:.3f}")],
    "07_finetune": [("acc_ssl_finetune_10", "SSL fine-tuned, 10 labels per class", "{:.3f}"),
                    ("acc_scratch_10", "from scratch, 10 labels per class", "{:.3f}"),
                    ("acc_ssl_finetune_all", "SSL fine-tuned, all labels", "{:.3f}"),
                    ("acc_scratch_all", "from scratch, all labels", "{:.3f}")],
    "08_your_data": [("knn", "SimCLR on shapes, 30 s of training, kNN", "{:.3f}"),
                     ("linear", "the same, linear probe", "{:.3f}"),
                     ("sweep_s", "a 4-run sweep, wall time", "{:.0f} s")],
    "09_deploy": [("acc_torch_fp32", "classifier in torch (fp32), accuracy", "{:.3f}"),
                  ("acc_onnx_int8", "int8 ONNX, accuracy", "{:.3f}"),
                  ("size_ratio_int8", "int8 file, times smaller than fp32", "{:.2f}x"),
                  ("speedup_int8_vs_torch_b1", "int8 ONNX at batch 1, times faster than eager torch", "{:.2f}x"),
                  ("knn_student_distilled", "distilled student (a quarter of the parameters), kNN", "{:.3f}")],
}

_TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{#- the book runs no widgets: no require.js, no widget manager from a CDN -#}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head -%}
<meta name="generator" content="GENERATOR">
{{ super() }}
{%- endblock html_head -%}
{% block extra_css %}
<style type="text/css">
.book { max-width: 1100px; margin: 0 auto; padding: 0 16px; font-size: var(--jp-content-font-size1); }
.book-nav { display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; padding: 10px 16px; border-bottom: 1px solid #ddd; }
.book-run { margin: 14px 16px; padding: 10px 16px; border-left: 5px solid #2e8b57; background: #f3faf6; }
.book-run.other { border-left-color: #d98c00; background: #fff7e8; }
.jp-RenderedHTMLCommon.book-run table, .jp-RenderedHTMLCommon.book-index table { border-collapse: collapse;
  margin: 6px 0; }
.jp-RenderedHTMLCommon.book-run td, .jp-RenderedHTMLCommon.book-run th, .jp-RenderedHTMLCommon.book-index td,
.jp-RenderedHTMLCommon.book-index th { border: 1px solid #ddd; padding: 3px 8px; vertical-align: top;
  text-align: left; }
.jp-RenderedHTMLCommon.book-index ol { margin: 0; padding-left: 1.4em; }
.book-widget { font-style: italic; color: #555; }
</style>
{% endblock extra_css %}
{%- block body_header -%}{{ super() }}{{ resources.book_header }}{%- endblock body_header -%}
{% block body_footer %}{{ resources.book_footer }}{{ super() }}{% endblock body_footer %}
{%- block data_widget_view -%}
<div class="jp-OutputArea-output book-widget">An interactive widget was here: open the notebook in JupyterLab to
use it.</div>
{%- endblock data_widget_view -%}
""".replace("GENERATOR", GENERATOR)


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
    """When the notebook or the code it runs (sslkit, this module aside) last changed."""
    package = Path(__file__).resolve().parent
    code = [p.stat().st_mtime for p in package.rglob("*.py") if p.resolve() != Path(__file__).resolve()]
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
# rendering


def _exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"book.html.j2": _TEMPLATE})],
                        template_file="book.html.j2", embed_images=True)


def _minutes(seconds: float) -> str:
    """A lesson time as the index, the pages and the teacher's guide write it.

    >>> _minutes(1162.45), _minutes(54.59)
    ('19.4 min', '55 s')
    """
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _value(fmt: str, value) -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else html.escape(str(value))


def headline_rows(lesson: Lesson) -> list[tuple[str, str]]:
    """(what, value) of the lesson's headline results in its recorded run; a missing metric says so."""
    metrics = (lesson.recorded or {}).get("metrics", {})
    return [(label, _value(fmt, metrics[name]) if name in metrics else f"missing: no {name!r} in the results file")
            for name, label, fmt in HEADLINES.get(lesson.stem, [])]


def _nav(lessons_: list[Lesson], current: int | None) -> str:
    links = ['<a href="index.html">sslkit: the lessons</a>']
    if current is not None:
        if current > 0:
            before = lessons_[current - 1]
            links.append(f'<a href="{before.page}">&larr; {html.escape(before.title)}</a>')
        if current + 1 < len(lessons_):
            after = lessons_[current + 1]
            links.append(f'<a href="{after.page}">{html.escape(after.title)} &rarr;</a>')
    links += ['<a href="teaching.html">teacher\'s guide</a>', '<a href="glossary.html">glossary</a>']
    return f'<nav class="book-nav jp-RenderedHTMLCommon jp-RenderedMarkdown">{" · ".join(links)}</nav>'


def _recorded_box(lesson: Lesson, changed: int) -> str:
    """The box at the top of a lesson page: which run the page shows, and the recorded lesson run's numbers."""
    rec = lesson.recorded
    results_name = f"results/{lesson.stem}.lesson.json"
    if lesson.run_recorded:
        what = (f"<p><strong>This page is the recorded lesson run</strong>: the notebook executed at the lesson "
                f"profile; its figures and printed numbers are those of <code>{results_name}</code>.</p>")
        cls = "book-run"
    elif lesson.run_stored and lesson.run_profile == "lesson":
        what = (f"<p><strong>This page is a lesson run</strong> (<code>{html.escape(lesson.run.name)}</code>), not "
                f"the recorded one: the recorded lesson run's numbers are below, for comparison.</p>")
        cls = "book-run"
    else:
        origin = f" (<code>{html.escape(lesson.run.name)}</code>)" if lesson.run_stored else \
            ", made to build this book"
        what = (f"<p><strong>The figures and outputs on this page come from a {html.escape(lesson.run_profile)} "
                f"run</strong>{origin}"
                + (": tiny data and seconds of training, so its numbers say nothing about the methods. The numbers "
                   "that do are the recorded lesson run's, below.</p>" if lesson.run_profile == "smoke" else
                   ". The recorded lesson run's numbers are below, for comparison.</p>"))
        cls = "book-run other"
    if changed:
        what += (f"<p>The notebook has changed since this run: {changed} of its cells differ from the run's. "
                 f"Run the notebook to see the current version.</p>")
    if rec is None:
        return f'<aside class="{cls} jp-RenderedHTMLCommon jp-RenderedMarkdown">{what}<p>No recorded lesson run ' \
               f'(<code>{results_name}</code> is missing).</p></aside>'
    hw, torch_version = rec.get("hardware", {}), rec.get("versions", {}).get("torch", "?")
    rows = "".join(f"<tr><td>{html.escape(label)}</td><td>{value}</td></tr>" for label, value in headline_rows(lesson))
    every = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td>{_value('{:.4g}', v)}</td></tr>"
                    for k, v in rec.get("metrics", {}).items())
    return (f'<aside class="{cls} jp-RenderedHTMLCommon jp-RenderedMarkdown">{what}'
            f"<p><strong>The recorded lesson run</strong> (<code>{results_name}</code>): "
            f"{_minutes(rec['wall_time_s'])} on {html.escape(str(hw.get('cpu', '?')))} "
            f"({hw.get('torch_threads', '?')} torch threads), torch {html.escape(str(torch_version))}.</p>"
            f"<table>{rows}</table>"
            f"<details><summary>all {len(rec.get('metrics', {}))} numbers of the recorded run</summary>"
            f"<table>{every}</table></details></aside>")


def _index_body(lessons_: list[Lesson]) -> str:
    rows = []
    for lesson in lessons_:
        rec = lesson.recorded
        time_ = _minutes(rec["wall_time_s"]) if rec else "not recorded"
        heads = "<br>".join(f"{html.escape(label)}: <strong>{value}</strong>" for label, value in headline_rows(lesson))
        shown = "the recorded lesson run" if lesson.run_recorded else f"a {html.escape(lesson.run_profile)} run"
        rows.append(f'<tr><td><a href="{lesson.page}">{html.escape(lesson.title)}</a></td><td>{lesson.teaches}</td>'
                    f"<td>{time_}</td><td>{heads}</td><td>{shown}</td></tr>")
    recorded = [lesson.recorded for lesson in lessons_ if lesson.recorded]
    total = sum(rec["wall_time_s"] for rec in recorded)
    threads = sorted({str(rec.get("hardware", {}).get("torch_threads", "?")) for rec in recorded})
    where = f"with {' or '.join(threads)} CPU threads, as each page says"
    return (
        '<div class="book book-index jp-RenderedHTMLCommon jp-RenderedMarkdown">'
        "<h1>sslkit: self-supervised learning for vision, the lessons</h1>"
        f"<p>{len(lessons_)} notebooks, in order. Each page is a notebook with its figures and outputs; the lesson "
        "time and the headline results are those of the recorded lesson runs committed in <code>results/</code> "
        f"(measured {where}; {_minutes(total)} for the whole sequence). A page whose figures come from "
        "a smoke run says so, and shows the recorded run's numbers beside it.</p>"
        '<p>For teachers: the <a href="teaching.html">teacher\'s guide</a> (objectives, exercises, a course plan, '
        'running a class, grading). For everyone: the <a href="glossary.html">glossary</a>.</p>'
        "<table><thead><tr><th>notebook</th><th>what it teaches</th><th>lesson time</th>"
        "<th>headline results (recorded lesson run)</th><th>this page shows</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>")


def _book_href(href: str, source_dir: Path, pages: dict[Path, str]) -> str:
    """A link of a source file (a notebook, a doc) as a link of the book: a notebook or a doc that has a page
    links to the page; anything else is left as it is (``check_links`` reports it if it does not resolve).

    >>> pages = {(DOCS / "glossary.md").resolve(): "glossary.html"}
    >>> _book_href("glossary.md#collapse", DOCS, pages), _book_href("https://lightly.ai", DOCS, pages)
    ('glossary.html#collapse', 'https://lightly.ai')
    """
    if not href or href.startswith("#") or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", href):
        return href
    path, _, fragment = href.partition("#")
    target = (source_dir / path).resolve()
    if target in pages:
        return pages[target] + (f"#{fragment}" if fragment else "")
    return href


def _rewrite_links(page: str, source_dir: Path, pages: dict[Path, str]) -> str:
    def sub(m):
        new = _book_href(html.unescape(m.group(2)), source_dir, pages)
        return f'{m.group(1)}="{html.escape(new)}"'

    return re.sub(r'(<a\b[^>]*?\bhref)="([^"]*)"', sub, page)


def _render(exporter, nb: dict, title: str, header: str, footer: str = "", source_dir: Path = NOTEBOOKS) -> str:
    import nbformat

    node = nbformat.reads(json.dumps(nb), as_version=4)  # sources as strings, as the exporter wants them
    node.metadata.pop("widgets", None)  # widget state would pull a widget manager from a CDN; the book is static
    page, _ = exporter.from_notebook_node(node, resources={
        "metadata": {"name": title, "path": str(source_dir)}, "book_header": header, "book_footer": footer})
    return page


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
    exporter = _exporter()
    for i, lesson in enumerate(lessons_):
        nb = json.loads(lesson.run.read_text(encoding="utf-8"))
        changed = _changed_cells(nb, json.loads(lesson.notebook.read_text(encoding="utf-8")))
        if hide_solutions:
            nb = _hide_solutions(nb, lesson.run.name)
        header = _nav(lessons_, i) + _recorded_box(lesson, changed)
        footer = _nav(lessons_, i)
        page = _render(exporter, nb, lesson.title, header, footer, source_dir=lesson.notebook.parent)
        (out / lesson.page).write_text(_rewrite_links(page, lesson.notebook.parent, pages), encoding="utf-8")
    for src, page_name in DOC_PAGES.items():
        path = Path(docs_dir) / src
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the book renders it as {page_name}")
        text = path.read_text(encoding="utf-8")
        title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), path.stem)
        nb = {"cells": [{"cell_type": "markdown", "id": "doc", "metadata": {}, "source": text}], "metadata": {},
              "nbformat": 4, "nbformat_minor": 5}
        page = _render(exporter, nb, title, _nav(lessons_, None), source_dir=path.parent)
        (out / page_name).write_text(_rewrite_links(page, path.parent, pages), encoding="utf-8")
    index = _render(exporter, {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
                    "sslkit: the lessons", _nav(lessons_, None) + _index_body(lessons_))
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
    parser.add_argument("--profile", default="smoke",
                        help="profile of the runs made for notebooks without a stored run (default: smoke)")
    parser.add_argument("--fresh", action="store_true", help="execute again instead of reusing OUT/_runs/")
    parser.add_argument("--hide-solutions", action="store_true",
                        help="show each exercise's solution as the student version's placeholder")
    args = parser.parse_args(argv)
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

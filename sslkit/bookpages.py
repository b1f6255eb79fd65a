"""The book's pages: the HTML around each executed notebook, the index, the links between pages.

``sslkit.book`` picks the run each lesson page shows and assembles the site; this module makes the pages' HTML.
A page is nbconvert's JupyterLab rendering of a notebook (``make_exporter``: figures embedded as data URIs,
no widget manager from a CDN) with the book's navigation at its top and bottom (``nav``) and, on a lesson
page, a box that says which run the page shows beside the recorded lesson run's numbers (``recorded_box``,
``headline_rows``, ``HEADLINES``). Links between sources become links between pages (``rewrite_links``).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .book import Lesson

GENERATOR = "sslkit.book"  # the <meta name="generator"> of every page: a rebuild removes only pages it wrote

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


def make_exporter():
    """nbconvert's JupyterLab HTML exporter with the book's template (figures embedded, no widget manager)."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"book.html.j2": _TEMPLATE})],
                        template_file="book.html.j2", embed_images=True)


def minutes(seconds: float) -> str:
    """A lesson time as the index, the pages and the teacher's guide write it.

    >>> minutes(1162.45), minutes(54.59)
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


def nav(lessons_: list[Lesson], current: int | None) -> str:
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


def recorded_box(lesson: Lesson, changed: int) -> str:
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
            f"{minutes(rec['wall_time_s'])} on {html.escape(str(hw.get('cpu', '?')))} "
            f"({hw.get('torch_threads', '?')} torch threads), torch {html.escape(str(torch_version))}.</p>"
            f"<table>{rows}</table>"
            f"<details><summary>all {len(rec.get('metrics', {}))} numbers of the recorded run</summary>"
            f"<table>{every}</table></details></aside>")


def index_body(lessons_: list[Lesson]) -> str:
    rows = []
    for lesson in lessons_:
        rec = lesson.recorded
        time_ = minutes(rec["wall_time_s"]) if rec else "not recorded"
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
        f"(measured {where}; {minutes(total)} for the whole sequence). A page whose figures come from "
        "a smoke run says so, and shows the recorded run's numbers beside it.</p>"
        '<p>For teachers: the <a href="teaching.html">teacher\'s guide</a> (objectives, exercises, a course plan, '
        'running a class, grading). For everyone: the <a href="glossary.html">glossary</a>.</p>'
        "<table><thead><tr><th>notebook</th><th>what it teaches</th><th>lesson time</th>"
        "<th>headline results (recorded lesson run)</th><th>this page shows</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>")


def _book_href(href: str, source_dir: Path, pages: dict[Path, str]) -> str:
    """A link of a source file (a notebook, a doc) as a link of the book: a notebook or a doc that has a page
    links to the page; anything else is left as it is (``check_links`` reports it if it does not resolve).

    >>> docs = Path("docs")
    >>> pages = {(docs / "glossary.md").resolve(): "glossary.html"}
    >>> _book_href("glossary.md#collapse", docs, pages), _book_href("https://lightly.ai", docs, pages)
    ('glossary.html#collapse', 'https://lightly.ai')
    """
    if not href or href.startswith("#") or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", href):
        return href
    path, _, fragment = href.partition("#")
    target = (source_dir / path).resolve()
    if target in pages:
        return pages[target] + (f"#{fragment}" if fragment else "")
    return href


def rewrite_links(page: str, source_dir: Path, pages: dict[Path, str]) -> str:
    def sub(m):
        new = _book_href(html.unescape(m.group(2)), source_dir, pages)
        return f'{m.group(1)}="{html.escape(new)}"'

    return re.sub(r'(<a\b[^>]*?\bhref)="([^"]*)"', sub, page)


def render(exporter, nb: dict, title: str, header: str, footer: str = "", *, source_dir: Path) -> str:
    """One page: the notebook ``nb`` (a dict) rendered by ``exporter``, ``header`` and ``footer`` HTML around it;
    ``source_dir`` is the folder its relative paths are read from."""
    import nbformat

    node = nbformat.reads(json.dumps(nb), as_version=4)  # sources as strings, as the exporter wants them
    node.metadata.pop("widgets", None)  # widget state would pull a widget manager from a CDN; the book is static
    page, _ = exporter.from_notebook_node(node, resources={
        "metadata": {"name": title, "path": str(source_dir)}, "book_header": header, "book_footer": footer})
    return page

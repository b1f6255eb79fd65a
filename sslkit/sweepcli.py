"""``python -m sslkit.sweep OUT_DIR --grid NAME=V1,V2 ...``: notebook 08's sweep from a shell.

Every combination of the grid is one papermill run of a notebook (by default the one-experiment notebook of
``sslkit.experiment``, written into ``OUT_DIR``), with its executed notebook and results file in ``OUT_DIR``
(``sslkit.sweep.sweep``: finished runs are skipped, so the same command resumes a sweep). The table of the grid's
runs (``collect``, ``format_table``) is printed at the end, and with ``--csv`` written to a file.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from .cli import literal

EXAMPLES = """examples:
  python -m sslkit.sweep runs/sweep --grid METHOD=simclr,byol --grid NUM_EPOCHS=2,8 --set PROFILE=smoke
  python -m sslkit.sweep runs/sweep --grid LR=0.001,0.003 --set DATASET=path/to/images --metrics knn,linear
  python -m sslkit.sweep runs/temps --notebook notebooks/02_contrastive.ipynb --grid "TEMPERATURE=0.1,0.5" --limit 1

Names are the notebook's parameters (upper case; python -m sslkit.sweep OUT_DIR --list-parameters lists them).
Values are Python literals where they parse (2, 0.003, True, None, [0.5, 1.0]) and text otherwise."""


def parse_assignment(text: str, many: bool) -> tuple[str, object]:
    """``"LR=0.1,0.3"`` -> ``("LR", [0.1, 0.3])`` (``many``: a grid's values; a list literal is one value each).

    >>> parse_assignment("method=simclr,byol", many=True)
    ('METHOD', ['simclr', 'byol'])
    >>> parse_assignment("CROP=[[0.5, 1.0], [0.2, 1.0]]", many=True)
    ('CROP', [[0.5, 1.0], [0.2, 1.0]])
    >>> parse_assignment("PROFILE=smoke", many=False)
    ('PROFILE', 'smoke')
    """
    name, sep, rhs = text.partition("=")
    if not sep or not name.strip() or not rhs.strip():
        example = "--grid LR=0.001,0.003" if many else "--set PROFILE=smoke"
        raise ValueError(f"{text!r}: write NAME=VALUE{'S' if many else ''}, e.g. {example}")
    if not many:
        return name.strip().upper(), literal(rhs)
    values = literal(rhs) if rhs.strip().startswith("[") else [literal(v) for v in rhs.split(",")]
    if not isinstance(values, list) or not values:
        raise ValueError(f"{text!r}: give the values separated by commas, or as a list literal")
    return name.strip().upper(), values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sslkit.sweep", epilog=EXAMPLES,
                                     description="Run a notebook once per combination of a grid (papermill), "
                                                 "resumable, and print the table of the runs.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="where each run's executed notebook and results file go")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                        help="a swept parameter and its values; repeatable (the last varies fastest)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter every run gets; repeatable")
    parser.add_argument("--notebook", help="the notebook to run (default: the one-experiment notebook, written "
                                           "into OUT_DIR/experiment.ipynb)")
    parser.add_argument("--metrics", help="the table's metrics, comma-separated (default: all)")
    parser.add_argument("--limit", type=int, help="stop after this many new runs (the same command goes on)")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    parser.add_argument("--list-parameters", action="store_true", help="list the notebook's parameters and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """0 when every run finished, 1 when some failed (the others still ran), 2 for a bad command line."""
    from .experiment import experiment_notebook
    from .nbtools import notebook_parameters
    from .results import check_writable
    from .sweep import collect, format_table, grid_runs, sweep

    parser = _parser()
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    try:
        grid, fixed = {}, {}
        for given, into, many in [(args.grid, grid, True), (args.set, fixed, False)]:
            for text in given:
                name, value = parse_assignment(text, many)
                if name in grid or name in fixed:  # (names are upper-cased: method and METHOD are one)
                    raise ValueError(f"{name} is given twice ({text!r}); give each name once, in --grid or --set")
                into[name] = value
        if args.csv:
            check_writable(args.csv)
        if args.notebook and not Path(args.notebook).is_file():
            raise FileNotFoundError(f"no notebook {args.notebook!r}; give the path of an .ipynb file (or leave "
                                    f"--notebook out for the one-experiment notebook)")
        notebook = Path(args.notebook) if args.notebook else experiment_notebook(out_dir / "experiment.ipynb")
        if args.list_parameters:
            print("\n".join(notebook_parameters(notebook)))
            return 0
        if not grid:
            raise ValueError("give at least one --grid NAME=V1,V2 (e.g. --grid METHOD=simclr,byol)")
        report = sweep(notebook, grid, out_dir, fixed, limit=args.limit)
    except (OSError, ValueError) as e:
        parser.error(str(e))
    print(report)  # (sweep has printed each failed run's error)
    if report.pending:
        print(f"left for later (--limit): {', '.join(report.pending)}; run the same command again to go on")
    metrics = args.metrics.split(",") if args.metrics else None
    rows = collect(out_dir, metrics, runs=grid_runs(grid))
    print(format_table(rows))
    if args.csv and rows:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
        print(f"table written to {args.csv}")
    return 1 if report.failed else 0

"""Running and tidying the notebooks: papermill execution, output stripping, parameters.

- ``run_notebook``: execute a notebook headless with papermill on the project's kernel,
  with parameters injected; a failure raises ``NotebookError`` showing the failing cell's
  source and error (not papermill's whole traceback).
- ``strip_outputs``: committed notebooks carry no outputs, except in cells marked
  ``# NBVAL_CHECK_OUTPUT``, whose stored output nbval compares with a fresh run.
- ``refresh_checked_outputs``: run a notebook at the smoke profile and store the outputs of
  its checked cells (and nothing else) back into it.
- ``make_student``: the student version of a notebook: every exercise's solution (between nbgrader's
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``) replaced by ``raise NotImplementedError``, no outputs.

    python -m sslkit.nbtools strip notebooks/*.ipynb
    python -m sslkit.nbtools refresh notebooks/00_welcome.ipynb
    python -m sslkit.nbtools student notebooks/*.ipynb --out student    # what `make student` runs
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

CHECK_MARK = "NBVAL_CHECK_OUTPUT"
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
PLACEHOLDER = 'raise NotImplementedError("your code here")'
KERNEL = "sslkit"
# the kernels papermill starts log only errors: ipykernel's warning that a local kernel talks over TCP would
# otherwise land in the output of the notebook cell that runs them (notebook 08's sweeps)
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


class NotebookError(RuntimeError):
    """A notebook cell failed; the message holds the cell's source and its error."""


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def is_checked(cell) -> bool:
    return cell.get("cell_type") == "code" and CHECK_MARK in _source(cell)


def notebook_parameters(path: str | Path) -> dict:
    """The names and defaults in a notebook's ``parameters`` cell (papermill's inspection).

    Raises ValueError when the notebook has no cell tagged ``parameters``.
    """
    import papermill

    params = papermill.inspect_notebook(str(path))
    if not params:
        raise ValueError(f"{path} has no cell tagged 'parameters'; tag one (View > Cell Toolbar > Tags)")
    return {name: p["default"] for name, p in params.items()}


def run_notebook(path: str | Path, output_path: str | Path | None = None, parameters: dict | None = None,
                 kernel: str = KERNEL, cwd: str | Path | None = None, timeout: int = 1800,
                 progress: bool = False):
    """Execute ``path`` with papermill and return the executed notebook (an nbformat node).

    Args:
        output_path: where the executed notebook goes (None: a temporary file).
        parameters: values injected after the ``parameters`` cell; each name must exist there.
        cwd: working directory of the kernel (default: the notebook's folder, as in JupyterLab).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    path = Path(path)
    parameters = dict(parameters or {})
    unknown = set(parameters) - set(notebook_parameters(path))
    if unknown:
        raise ValueError(f"{path.name} has no parameter(s) {sorted(unknown)}; its parameters cell defines: "
                         f"{', '.join(notebook_parameters(path))}")
    if output_path is None:
        output_path = Path(tempfile.mkdtemp(prefix="sslkit-nb-")) / path.name
    try:
        return papermill.execute_notebook(str(path), str(output_path), parameters=parameters, kernel_name=kernel,
                                          cwd=str(cwd or path.parent), progress_bar=progress,
                                          execution_timeout=timeout, extra_arguments=QUIET_KERNEL)
    except PapermillExecutionError as e:
        nb = json.loads(Path(output_path).read_text())
        failed = [c for c in nb["cells"] if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
        cell = failed[0] if failed else {}
        error = NotebookError(f"{path.name}: cell {e.exec_count} failed\n--- source ---\n{_source(cell)}\n"
                              f"--- error ---\n{e.ename}: {e.evalue}\n(executed notebook: {output_path})")
        error.error = f"{e.ename}: {e.evalue}"  # the one line a report needs
        raise error from None


def read_notebook(path: str | Path) -> dict:
    """The notebook at ``path`` as a dict; ValueError (with the fix) when the file is not a Jupyter notebook.

    >>> read_notebook(__file__)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: ...nbtools.py is not a Jupyter notebook (...); give the path of a .ipynb file
    """
    try:
        nb = json.loads(Path(path).read_text())
    except ValueError as e:  # json's errors and undecodable bytes
        raise ValueError(f"{path} is not a Jupyter notebook ({e}); give the path of a .ipynb file") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError(f"{path} is not a Jupyter notebook (it has no list of cells); give the path of a .ipynb file")
    return nb


def load_teaching_cell(path: str | Path, tag: str) -> dict:
    """Execute the cell tagged ``tag`` (e.g. "teach:ntxent") of a notebook; return its namespace.

    Notebooks write some things from scratch to teach them (a loss, Grad-CAM); the tests load that
    very cell with this and compare it with the library's version, so the lesson cannot drift.
    """
    nb = read_notebook(path)
    cells = [c for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{Path(path).name} has {len(cells)} cells tagged {tag!r}; tag exactly one")
    namespace: dict = {}
    exec(compile(_source(cells[0]), f"{Path(path).name}[{tag}]", "exec"), namespace)
    return namespace


def unchecked_outputs(nb: dict) -> list[int]:
    """Indices of code cells that carry outputs or execution counts but are not marked as checked."""
    return [i for i, c in enumerate(nb["cells"])
            if c.get("cell_type") == "code" and not is_checked(c) and (c.get("outputs") or c.get("execution_count"))]


def strip_outputs(path: str | Path) -> bool:
    """Remove outputs and execution counts outside checked cells; returns True if the file changed."""
    path = Path(path)
    nb = read_notebook(path)
    text = path.read_text()
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
        if not is_checked(cell):
            cell["outputs"], cell["execution_count"] = [], None
    nb.get("metadata", {}).pop("papermill", None)
    new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if new != text:
        path.write_text(new)
        return True
    return False


def refresh_checked_outputs(path: str | Path) -> None:
    """Execute at the smoke profile and store the outputs of checked cells only."""
    path = Path(path)
    nb = read_notebook(path)  # a file that is not a notebook stops here, before papermill tries it
    with tempfile.TemporaryDirectory() as tmp:
        executed = run_notebook(path, Path(tmp) / path.name,
                                {"PROFILE": "smoke", "RESULTS_PATH": str(Path(tmp) / "results.json")})
    ran = [c for c in executed["cells"] if c.get("cell_type") == "code" and "injected-parameters"
           not in c.get("metadata", {}).get("tags", [])]
    code = [c for c in nb["cells"] if c.get("cell_type") == "code"]
    for mine, theirs in zip(code, ran):
        if is_checked(mine):
            mine["outputs"] = [dict(o) for o in theirs.get("outputs", [])]
            mine["execution_count"] = theirs.get("execution_count")
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    strip_outputs(path)


def solution_blocks(source: str, where: str = "cell") -> list[tuple[int, int]]:
    """(BEGIN line, END line) of each solution in ``source``; ValueError naming ``where`` when the markers
    are not well formed (an END missing or without its BEGIN, a BEGIN inside a solution)."""
    blocks, begin = [], None
    for i, line in enumerate(source.splitlines()):
        marker = line.strip()
        if marker == BEGIN_SOLUTION:
            if begin is not None:
                raise ValueError(f"{where}: line {i + 1} opens a solution inside the one opened on line {begin + 1}; "
                                 f"close it with {END_SOLUTION!r} first")
            begin = i
        elif marker == END_SOLUTION:
            if begin is None:
                raise ValueError(f"{where}: line {i + 1} closes a solution that was never opened with "
                                 f"{BEGIN_SOLUTION!r}")
            blocks.append((begin, i))
            begin = None
        elif BEGIN_SOLUTION in line or END_SOLUTION in line:
            raise ValueError(f"{where}: line {i + 1} holds a solution marker with other text; put it on a line of "
                             f"its own")
    if begin is not None:
        raise ValueError(f"{where}: the solution opened on line {begin + 1} is never closed with {END_SOLUTION!r}")
    return blocks


def student_source(source: str, where: str = "cell") -> str:
    """``source`` with each solution block replaced by the placeholder, at the indentation of its BEGIN line."""
    lines = source.splitlines()
    for begin, end in reversed(solution_blocks(source, where)):
        indent = lines[begin][:len(lines[begin]) - len(lines[begin].lstrip())]
        lines[begin:end + 1] = [f"{indent}# your code here: see the exercise's text above", f"{indent}{PLACEHOLDER}"]
    return "\n".join(lines) + ("\n" if source.endswith("\n") else "")


def make_student(path: str | Path, out_dir: str | Path) -> Path:
    """Write the student version of the notebook ``path`` into ``out_dir`` (same name); returns its path.

    Solutions become ``raise NotImplementedError("your code here")``; outputs go (checked ones too: a student
    version shows nothing a run did not produce). ValueError when a cell's markers are not well formed.
    """
    path, out_dir = Path(path), Path(out_dir)
    nb = read_notebook(path)
    for k, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") == "code":
            cell["source"] = student_source(_source(cell), f"{path.name}, cell {k}")
            cell["outputs"], cell["execution_count"] = [], None
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    out.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["student"]:
        import argparse

        parser = argparse.ArgumentParser(prog="python -m sslkit.nbtools student",
                                         description="Write student versions of notebooks: solutions replaced by "
                                                     "raise NotImplementedError, no outputs.")
        parser.add_argument("notebooks", nargs="+")
        parser.add_argument("--out", default="student", help="folder for the student versions (default: student)")
        args = parser.parse_args(argv[1:])
        for p in args.notebooks:
            try:
                print(f"{p} -> {make_student(p, args.out)}")
            except (ValueError, OSError) as e:
                parser.error(str(e))
        return 0
    if len(argv) < 2 or argv[0] not in ("strip", "refresh"):
        print("usage: python -m sslkit.nbtools {strip|refresh|student} NOTEBOOK...", file=sys.stderr)
        return 2
    for p in argv[1:]:
        try:
            if argv[0] == "strip":
                print(f"{p}: {'stripped' if strip_outputs(p) else 'clean'}")
            else:
                refresh_checked_outputs(p)
                print(f"{p}: checked outputs refreshed")
        except (ValueError, OSError) as e:  # a missing file, or one that is not a notebook
            print(f"python -m sslkit.nbtools {argv[0]}: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The package stays readable: small modules, short functions, imports in one direction, a module list that is
true (STYLE.md: one concept per module, each readable in one sitting)."""
import ast
import re
from pathlib import Path

import sslkit

PACKAGE = Path(sslkit.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
MAX_MODULE_LINES = 420  # "about 400"
MAX_FUNCTION_LINES = 120


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_modules_and_functions_are_short():
    long_modules = {_name(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long_modules, f"split these modules by concept: {long_modules}"
    long_functions = {}
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions[f"{_name(path)}.{node.name}"] = length
    assert not long_functions, long_functions


def _module_imports(path: Path) -> set[str]:
    """The sslkit modules that ``path`` imports at module level (not inside functions)."""
    here = _name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {target} if node.module else {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sslkit"):
            found.add(node.module)
    names = {_name(p) for p in MODULES}
    return {t for t in found if t in names and t != _name(path)}


def test_no_import_cycles_and_the_methods_never_import_the_loop():
    graph = {_name(p): _module_imports(p) for p in MODULES}
    for name, deps in graph.items():
        if name.startswith("sslkit.methods"):
            assert not deps & {"sslkit.train", "sslkit.cli", "sslkit.finetune", "sslkit.supervised"}, (name, deps)

    def visit(node, path):
        for dep in graph.get(node, ()):
            assert dep not in path, f"import cycle: {' -> '.join(path + [dep])}"
            visit(dep, path + [dep])

    for name in graph:
        visit(name, [name])


def test_the_package_docstring_lists_every_module():
    listed = set(re.findall(r"``sslkit\.(\w+)``", sslkit.__doc__))
    top = {p.stem if p.name != "__init__.py" else p.parent.name for p in MODULES
           if p.parent == PACKAGE or p.name == "__init__.py" and p.parent.parent == PACKAGE} - {"sslkit"}
    assert top - {"__init__"} == listed, (sorted(top - listed), sorted(listed - top))
    assert listed == sslkit._SUBMODULES

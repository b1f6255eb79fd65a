"""The environment is pinned in one place (constraints.txt); environment.yml and pyproject.toml agree with it."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    return pins


def _environment_yml():
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s+- ([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def _pyproject_dependencies():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds]
    return [_norm(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in deps]


def test_torch_pair_is_pinned():
    pins = _constraints()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_environment_yml_matches_constraints():
    env, pins = _environment_yml(), _constraints()
    assert env, "environment.yml has no pinned pip packages"
    mismatched = {name: (v, pins.get(name)) for name, v in env.items() if pins.get(name) != v}
    assert not mismatched, f"environment.yml and constraints.txt disagree (yml, constraints): {mismatched}"


def test_every_dependency_is_pinned_and_named_in_environment_yml():
    env, pins = _environment_yml(), _constraints()
    deps = _pyproject_dependencies()
    assert {"torch", "torchvision", "lightly", "jupyterlab", "matplotlib", "ipywidgets", "nbval", "papermill",
            "pytest", "tqdm"} <= set(deps)
    assert [d for d in deps if d not in pins] == [], "dependencies missing from constraints.txt"
    assert [d for d in deps if d not in env] == [], "dependencies missing from environment.yml"


def test_installed_versions_are_the_pinned_ones():
    from importlib.metadata import version
    pins = _constraints()
    for name in _pyproject_dependencies():
        installed = version(name).split("+")[0]
        assert installed == pins[name], f"{name}: installed {installed}, pinned {pins[name]}; run make install"


def test_import_is_light_and_offline():
    # no network (a socket that connects fails loudly) and no heavy optional library at import
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise AssertionError('network access during import')\n"
        "socket.socket.connect = refuse\nsocket.create_connection = refuse\n"
        "import sys, sslkit\n"
        "cfg = sslkit.make_config('smoke')\n"
        "heavy = [m for m in ('lightly', 'matplotlib', 'papermill', 'pytorch_grad_cam', 'sklearn', 'ipywidgets') if m in sys.modules]\n"
        "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_ci_script_calls_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_make_refuses_a_full_disk_before_creating_the_environment(tmp_path):
    """The CUDA build of torch is 6.2 GB: with too little space, `make` says so up front (pip would fail midway)."""
    venv = tmp_path / "new" / ".venv"
    out = subprocess.run(["make", "-s", "install", f"VENV={venv}", "NEED_GB=1000000"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "GB free in" in out.stderr and "make VENV=" in out.stderr, out.stderr
    assert not venv.exists()


def test_installed_packages_carry_their_bytecode():
    """`make install` compiles the packages as it installs them (uv's --compile-bytecode, pip's default): where
    PYTHONDONTWRITEBYTECODE is set, a missing .pyc is compiled again by every kernel and worker (make test 60% slower)."""
    import importlib.util

    import torch
    import torchvision
    for module in (torch, torchvision, torch.nn.modules.conv):
        cached = Path(importlib.util.cache_from_source(module.__file__))
        assert cached.exists(), f"{module.__name__} has no bytecode ({cached}); reinstall: rm -r .venv && make install"

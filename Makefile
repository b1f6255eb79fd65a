# sslkit: two commands do all set-up on a fresh machine.
#   make lab    create .venv, install the kit at pinned versions, register the kernel, open JupyterLab
#   make test   the same set-up, then the whole test suite (unit tests, doctests, every notebook)
#   make student  student versions of the notebooks in student/ (solutions replaced, no outputs)
#   make book     the lessons as a static HTML site in book/ (open book/index.html)
#   make bench    the dataset benchmark; make strip-notebooks: clear committed outputs; make clean: remove .venv, student/, book/, caches
#   make help     this list (plain `make` too)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sslkit-installed
PORT ?= 8888
# Jupyter refuses to run as root unless told (containers, CI machines)
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
# pip's "Location ... is ignored" lines from this machine's mirrors are noise
PIP_FILTER := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: help install lab test bench strip-notebooks student book clean
.DEFAULT_GOAL := help

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

# uv (pip-installed into $(VENV), pinned in constraints.txt) installs the same pinned set as pip in under a minute where
# pip takes about three (torch's CUDA wheels); --no-cache keeps no second copy of them on disk, --compile-bytecode
# writes the .pyc files pip writes (without them every kernel and worker compiles torch afresh: make test took 60% longer).
# Where uv cannot be installed or fails (a proxy with its own certificates, say), pip does it.
# the pinned torch/torchvision pair is a CUDA build (it runs on the CPU too): about 6.2 GB in $(VENV)
NEED_GB ?= 6.5

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "sslkit needs Python 3.10 or newer; run make PYTHON=python3.11"'
	@$(PYTHON) -c 'import shutil, sys; from pathlib import Path; v = Path("$(VENV)").absolute(); d = next(p for p in v.parents if p.exists()); free = shutil.disk_usage(d).free / 2**30; \
		free < $(NEED_GB) and sys.exit(f"sslkit: {free:.1f} GB free in {d}, the install needs about $(NEED_GB) GB (torch with its CUDA libraries is 6.2 GB, on a CPU machine too). " \
		"Free some space (old clones of this repository with their .venv, pip cache purge) or put the environment elsewhere: make VENV=/path/with/space/.venv ...")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	@echo "installing sslkit and its pinned dependencies into $(VENV) (first time: about a minute with uv, a few with pip)"
	set -o pipefail; if $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt uv 2>&1 | { $(PIP_FILTER); } \
		&& $(BIN)/uv pip install --quiet --no-cache --compile-bytecode --python $(BIN)/python -c constraints.txt -e '.[dev]'; then :; \
	else \
		echo "uv could not install the kit (above); installing with pip instead, which takes a few minutes"; \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]' 2>&1 | { $(PIP_FILTER); }; \
	fi
	$(BIN)/python -m ipykernel install --sys-prefix --name sslkit --display-name "Python (sslkit)" >/dev/null
	@touch $(STAMP)

install: $(STAMP)

# JupyterLab on notebooks/ (LAB_DIR=student: on the student versions): token authentication on, localhost only; a
# taken port moves to the next free one
LAB_DIR ?= notebooks
lab: install
	$(BIN)/jupyter lab --notebook-dir=$(LAB_DIR) --ServerApp.ip=127.0.0.1 --ServerApp.port=$(PORT) \
		--ServerApp.port_retries=50 $(ALLOW_ROOT)

# the suite in one pytest-xdist worker per core (TEST_WORKERS=0: in this process, one test after another);
# conftest.py gives each worker its share of the cores and keeps the tests that share a module fixture together
TEST_WORKERS ?= auto
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --nbval-lax --nbval-cell-timeout=300

bench: install
	$(BIN)/python -m sslkit.bench dataset

# strip outputs from committed notebooks, keeping the cells marked NBVAL_CHECK_OUTPUT
strip-notebooks: install
	$(BIN)/python -m sslkit.nbtools strip notebooks/*.ipynb

# student versions: each exercise's solution replaced by `raise NotImplementedError`, outputs removed (git-ignored)
student: install
	$(BIN)/python -m sslkit.nbtools student notebooks/[0-9][0-9]_*.ipynb --out student

# the book: every lesson page from its stored lesson run (results/executed/) or a smoke run made for it (kept in
# book/_runs/, reused while newer than the notebook and sslkit), an index, the teacher's guide and the glossary;
# fails on a broken local link (git-ignored)
book: install
	$(BIN)/python -m sslkit.book --out book

clean:
	rm -rf $(VENV) notebooks/results data/cache student book

# The two commands of the README:
#   make lab    create the environment (first time only) and open JupyterLab on your working
#               copies of the chapters (work/, copied from tutorials/ the first time)
#   make test   create the environment (first time only, with the test tools) and run every test
# and for whoever changes the code:
#   make lint   ruff over the code, tests and notebooks, then mypy over the Communicator
#               protocol and the algorithms (both configured in pyproject.toml)
#   make book   the chapters as a static website, with their outputs: build/book/html/index.html
#   make gpu-check   on a machine with an NVIDIA GPU: every GPU check and benchmark, with a
#               report in bench/results/ (CONTRIBUTING.md, "The GPU check")
#
# The environment is a virtualenv in $(VENV) with declearn installed in editable mode, MPI
# included (the mpich wheel puts mpiexec into $(VENV)/bin: no compiler, no system MPI).
# PyTorch: $(TORCH) is installed only when the environment has no torch yet, so a build you
# installed yourself (CUDA, ROCm, CPU-only) is kept. Override it, e.g. `make lab TORCH=torch`.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.declearn-installed
TEST_STAMP := $(VENV)/.declearn-test-installed
BOOK_STAMP := $(VENV)/.declearn-book-installed
export PATH := $(BIN):$(PATH)

.PHONY: env lab present lint typecheck test book bench gpu-check gpu-wheels hosts hosts-down doctor clean

env: $(STAMP)

$(STAMP): pyproject.toml binder/overrides.json
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "declearn needs Python >= 3.10, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e .
	@# JupyterLab defaults for the tutorials: start the notebook's kernel without asking, no news.
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@cp binder/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	@touch $(STAMP)

# The tools of the tests and linters (pytest, nbclient, playwright, ruff, mypy): not for `make lab`.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(TEST_STAMP)

lab: $(STAMP)
	$(BIN)/declearn lab --tutorials tutorials --work work

# Lecture mode: a chapter's figures and widgets without code, for a projector (Voila).
CHAPTER ?= 00
present: $(STAMP)
	$(BIN)/declearn present $(CHAPTER)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Sphinx, myst-nb and the book theme (the [book] extra): for `make book` only.
$(BOOK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[book]"
	@touch $(BOOK_STAMP)

# The chapters as a static website (reading mode), from the executed copies in test-artifacts/
# (`make test` writes them); a chapter without a current copy is executed first, real engines.
book: $(BOOK_STAMP)
	$(BIN)/python -m book.build --out build/book --executed test-artifacts

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

gpu-check: $(TEST_STAMP)
	$(BIN)/python bench/gpu_check.py

# Wheels for a GPU machine without network that already has Python, torch and numpy (e.g. a
# CUDA container): `make gpu-wheels GPU_PYTHON=3.12`, carry .whl/, install them there with
# pip --no-index (CONTRIBUTING.md, "The GPU check").
GPU_PYTHON ?= 3.12
GPU_WHEELS := ipyparallel mpich mpi4py nbclient nbformat ipykernel ipywidgets
gpu-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	$(BIN)/python -m pip download --quiet --only-binary=:all: --python-version $(GPU_PYTHON) \
	  --implementation cp $(foreach t,2_17 2_24 2_26 2_27 2_28 2_31 2_34,--platform manylinux_$(t)_x86_64) \
	  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
	  $(shell $(BIN)/python -m pip list --format=freeze 2>/dev/null | grep -iE '^($(subst $() ,|,$(GPU_WHEELS)))==')
	@du -sh .whl

# Test hosts for multi-machine demos (root): HOSTS network namespaces joined by a virtual
# switch, each with an sshd (tools/netns_hosts.py; the tests make their own and remove them).
HOSTS ?= 2
hosts: $(STAMP)
	$(BIN)/python tools/netns_hosts.py up -n $(HOSTS) --sshd
hosts-down:
	$(BIN)/python tools/netns_hosts.py down

doctor: $(STAMP)
	$(BIN)/declearn doctor

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test-artifacts build/book

# The README's two commands: `make demo` and `make test`. Both install everything first.
# CPU machines: the CPU build of torch is installed before the package (a plain `torch` requirement would
# pull a multi-GB CUDA build). GPU machines: `make install TORCH_SPEC=torch` (see README).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEMO_ARGS ?=
PYTEST_ARGS ?=
PY := $(VENV)/bin/python

.PHONY: install demo test lint docs clean experiments-quick lowest

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m sctbr.demo --out demo_output $(DEMO_ARGS)

# Every experiment of the paper at its quick scale (CSV, PNG and Markdown summary per experiment).
experiments-quick: install
	$(PY) -m sctbr.experiments all --profile quick --out experiments_quick

# The test suite includes the README's examples (tests/test_readme.py) and the tutorials (tests/test_tutorials.py).
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Documentation (Sphinx + myst-nb), warnings are errors; the tutorials are rendered with their committed outputs.
$(VENV)/.docs-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-installed
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

lint: install
	$(VENV)/bin/ruff check sctbr tests benchmarks
	$(VENV)/bin/ruff format --check sctbr tests benchmarks

# The lower bounds work: a throwaway environment with the lowest anndata, scanpy and scvi-tools that pyproject.toml
# declares (read from it, pinned through a constraints file), the CPU torch wheel first as in `install`; then
# `import sctbr` and the fast tests (tree, simulator, lazy imports, a few tiny fits).
LOWEST_VENV ?= .venv-lowest
LOWEST_TESTS ?= tests/test_import.py tests/tree/test_tree.py tests/datasets/test_simulate.py tests/model/test_quiet.py

lowest:
	rm -rf $(LOWEST_VENV)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	sed -nE 's/^ *"(anndata|scanpy|scvi-tools) *>= *([0-9][0-9.]*).*/\1==\2/p' pyproject.toml > $(LOWEST_VENV)/constraints.txt
	test "$$(wc -l < $(LOWEST_VENV)/constraints.txt)" -eq 3
	$(LOWEST_VENV)/bin/python -m pip install --quiet -c $(LOWEST_VENV)/constraints.txt -e . "pytest>=8" "hypothesis>=6"
	$(LOWEST_VENV)/bin/python -m pip list --format=freeze | grep -iE '^(anndata|scanpy|scvi-tools|torch|lightning|numpy|pandas|scipy)=='
	$(LOWEST_VENV)/bin/python -c "import sctbr, sctbr.tl, sctbr.model, sctbr.pl, sctbr.pp, sctbr.datasets; print('import sctbr: ok')"
	MPLBACKEND=Agg $(LOWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(LOWEST_TESTS)

clean:
	rm -rf $(VENV) $(LOWEST_VENV) demo_output experiments_quick docs/_build docs/generated docs/notebooks

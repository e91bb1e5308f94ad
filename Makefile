# The README's two commands: `make demo` and `make test`. Both install everything first.
# CPU machines: the CPU build of torch is installed before the package (a plain `torch` requirement would
# pull a multi-GB CUDA build). GPU machines: `make install TORCH_SPEC=torch` (see README).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEMO_ARGS ?=
PYTEST_ARGS ?=
PY := $(VENV)/bin/python

.PHONY: install demo test lint docs clean experiments-quick

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

clean:
	rm -rf $(VENV) demo_output experiments_quick docs/_build docs/generated docs/notebooks

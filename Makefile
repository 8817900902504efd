# Reproduction entry points. The first target that needs it creates .venv with
# Python 3.11, 3.12 or 3.13 and installs the hashed lock file requirements.txt
# (pins: pyproject.toml) and this project; a change of either reinstalls.
#
#   make venv        only create .venv (PYTHON=python3.12 picks the interpreter)
#   make test        unit tests + every notebook with nbval (quick profile); models also on JAX if installed
#   make reproduce   run all notebooks, quick profile   -> build/notebooks/quick/ (JOBS=2: two at a time)
#   make full        run all notebooks, full profile    -> build/notebooks/full/
#   make full-gpu    the same with the JAX backend (GPU)
#   make report      regenerate the README headline table and docs/results.md
#   make lab         JupyterLab on notebooks/ (kernel "Python 3 (skyml)"); options in LAB_ARGS
#   make workshop-pack    data/cache + data/models/quick -> build/skyml-workshop-quick.tar.gz (+ .sha256)
#   make workshop-unpack  verify and restore that archive (FORCE=1 replaces files that differ)
#   make site        static HTML site of the executed notebooks, results, figures -> build/site/index.html
#   make jax         add the JAX backend (extra "jax", requirements-jax.txt) to .venv
#   make deconvolution  add Jolideco and PyTorch (extra "deconvolution") to .venv: notebook 08's Jolideco baseline
#   make lock        regenerate requirements.txt and requirements-jax.txt from pyproject.toml (uv)

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CELL_TIMEOUT ?= 3600
# notebooks run at once by make reproduce (run_all.py --jobs); empty: one at a time
JOBS ?=
# the interpreter that creates .venv: PYTHON=... if given, else the newest of
# these that runs and is Python 3.11-3.13
PYTHONS := python3.13 python3.12 python3.11 python3
PYTHON ?=
IS_SUPPORTED := -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))'
LOCK := requirements.txt
LOCK_JAX := requirements-jax.txt
JAX_STAMP := $(VENV)/.installed-jax
DECONV_STAMP := $(VENV)/.installed-deconvolution
# extra pip arguments of make deconvolution, e.g. an index of PyTorch's CPU-only wheels (smaller than the default build)
DECONV_PIP_ARGS ?=
UV_VERSION := 0.13.9
LOCK_TOOL := build/uv

.PHONY: help venv jax deconvolution lock test reproduce full full-gpu report lab workshop-pack workshop-unpack

help:
	@sed -n 's/^#   //p' Makefile

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@if [ ! -x $(PY) ]; then \
	  base="$(PYTHON)"; \
	  if [ -z "$$base" ]; then \
	    for p in $(PYTHONS); do $$p $(IS_SUPPORTED) 2>/dev/null && { base=$$p; break; }; done; \
	    test -n "$$base" || { echo "error: Python 3.11, 3.12 or 3.13 is needed: none of $(PYTHONS) is one; name one with PYTHON=/path/to/python3.12" >&2; exit 1; }; \
	  fi; \
	  $$base $(IS_SUPPORTED) 2>/dev/null || { echo "error: PYTHON=$$base is not Python 3.11, 3.12 or 3.13" >&2; exit 1; }; \
	  echo "creating $(VENV) with $$base (Python $$($$base -c 'import platform; print(platform.python_version())'))"; \
	  $$base -m venv $(VENV); \
	fi
	@v=$$($(PY) -c 'import platform; print(platform.python_version())'); \
	$(PY) $(IS_SUPPORTED) || { echo "error: $(VENV) runs Python $$v, not 3.11-3.13; remove it and retry" >&2; exit 1; }; \
	if [ -n "$(PYTHON)" ] && [ "$$($(PYTHON) -c 'import sys; print(sys.version_info[:2])')" != "$$($(PY) -c 'import sys; print(sys.version_info[:2])')" ]; then \
	  echo "error: $(VENV) runs Python $$v, not the one of PYTHON=$(PYTHON); remove $(VENV) and retry" >&2; exit 1; fi; \
	echo "installing into $(VENV) (Python $$v) from $(LOCK)"
	$(PY) -m pip install --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --no-deps -e .
	$(PY) -m pip check
	$(PY) -m ipykernel install --sys-prefix --name skyml --display-name "Python 3 (skyml)"
	touch $(STAMP)

jax: $(JAX_STAMP)

$(JAX_STAMP): $(STAMP) $(LOCK_JAX)
	$(PY) -m pip install --require-hashes --no-deps -r $(LOCK_JAX)
	touch $(JAX_STAMP)

# the extra "deconvolution" of pyproject.toml (jolideco, an sdist, and torch) over the locked environment; not
# locked: pip keeps every locked package and resolves only what jolideco and torch add
deconvolution: $(DECONV_STAMP)

$(DECONV_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install $(DECONV_PIP_ARGS) -e ".[deconvolution]"
	$(PY) -m pip check
	$(PY) -c 'from skyml.lhaaso import jolideco_baseline as jb; ok, why = jb.available(); print(why); assert ok'
	touch $(DECONV_STAMP)

# uv (pinned, from PyPI, in build/uv) resolves for every platform and for Python
# 3.11-3.13 at once (--universal). It keeps the versions already in the lock
# files that pyproject.toml allows; delete the lock files first to re-resolve all.
lock:
	@base="$(PYTHON)"; if [ -z "$$base" ]; then for p in $(PYTHONS); do $$p $(IS_SUPPORTED) 2>/dev/null && { base=$$p; break; }; done; fi; \
	$(LOCK_TOOL)/bin/uv --version 2>/dev/null | grep -qx "uv $(UV_VERSION)\( .*\)\?" || \
	  { rm -rf $(LOCK_TOOL) && $$base -m venv $(LOCK_TOOL) && $(LOCK_TOOL)/bin/python -m pip install -q uv==$(UV_VERSION); }
	$(LOCK_TOOL)/bin/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 --generate-hashes -o $(LOCK) -q
	$(LOCK_TOOL)/bin/uv pip compile pyproject.toml --extra test --extra jax --universal --python-version 3.11 --generate-hashes -o $(LOCK_JAX) -q

# make test: the unit tests, TEST_JOBS at a time (pytest-xdist, tests spread over workers); then the
# notebooks and exercise notebooks under nbval, TEST_JOBS at a time (pytest-xdist, each notebook whole on one worker); then the
# results-figures notebook alone, as it reads the other notebooks' results
TEST_JOBS ?= 2
NBVAL_ARGS = --nbval-lax --nbval-current-env --nbval-cell-timeout=$(CELL_TIMEOUT)
# the slowest tests of each step are listed at its end (where a CI run spends its time)
DURATIONS = --durations=15 --durations-min=20
test: $(STAMP)
	$(PY) -m pytest tests $(DURATIONS) -n $(TEST_JOBS)
	$(PY) -m pytest notebooks $(NBVAL_ARGS) $(DURATIONS) -n $(TEST_JOBS) --dist loadfile --ignore=notebooks/09_results_figures.ipynb
	$(PY) -m pytest notebooks/09_results_figures.ipynb $(NBVAL_ARGS)
	@if $(PY) -c 'import jax' 2>/dev/null; then \
	  echo "KERAS_BACKEND=jax $(PY) -m pytest tests/test_cta_models.py -q"; \
	  KERAS_BACKEND=jax $(PY) -m pytest tests/test_cta_models.py -q; \
	else echo "the model tests on the JAX backend are skipped: JAX is not installed (make jax adds it)"; fi

reproduce: $(STAMP)
	$(PY) run_all.py --profile quick $(if $(JOBS),--jobs $(JOBS))

full: $(STAMP)
	$(PY) run_all.py --profile full

full-gpu: $(JAX_STAMP)
	$(PY) run_all.py --profile full --backend jax

report: $(STAMP)
	$(PY) -m skyml.report

# e.g. make lab LAB_ARGS="--allow-root --no-browser --ip=0.0.0.0" (a classroom server, a container)
LAB_ARGS ?=
WORKSHOP_ARCHIVE ?= build/skyml-workshop-quick.tar.gz

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(LAB_ARGS)

workshop-pack: $(STAMP)
	$(PY) -m skyml.workshop pack $(WORKSHOP_ARCHIVE) $(if $(filter 1,$(FORCE)),--overwrite)

workshop-unpack: $(STAMP)
	$(PY) -m skyml.workshop unpack $(WORKSHOP_ARCHIVE) $(if $(filter 1,$(FORCE)),--force)

.PHONY: site
site: $(STAMP)
	$(PY) -m skyml.site

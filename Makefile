# Reproduction entry points. The first target that needs it creates .venv with
# Python 3.11 and installs this project with its pinned dependencies
# (pyproject.toml); a change of pyproject.toml reinstalls.
#
#   make test        unit tests + every notebook with nbval (quick profile); models also on JAX
#   make reproduce   run all notebooks, quick profile   -> build/notebooks/quick/
#   make full        run all notebooks, full profile    -> build/notebooks/full/
#   make full-gpu    the same with the JAX backend (GPU)
#   make report      regenerate the README headline table and docs/results.md
#   make lab         JupyterLab on notebooks/ (kernel "Python 3 (skyml)"); options in LAB_ARGS
#   make workshop-pack    data/cache + data/models/quick -> build/skyml-workshop-quick.tar.gz (+ .sha256)
#   make workshop-unpack  verify and restore that archive (FORCE=1 replaces files that differ)
#   make site        static HTML site of the executed notebooks, results, figures -> build/site/index.html

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CELL_TIMEOUT ?= 3600
# python3.11, or python3 when that is 3.11 (evaluated only when .venv is made)
PYTHON311 = $(shell command -v python3.11 || { python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && command -v python3; })

.PHONY: help venv test reproduce full full-gpu report lab workshop-pack workshop-unpack

help:
	@sed -n 's/^#   //p' Makefile

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  test -n "$(PYTHON311)" || { echo "error: Python 3.11 is needed (no python3.11, and python3 is not 3.11)" >&2; exit 1; }; \
	  echo "creating $(VENV) with $(PYTHON311)"; \
	  $(PYTHON311) -m venv $(VENV); \
	fi
	@$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "error: $(VENV) is not Python 3.11; remove it and retry" >&2; exit 1; }
	$(PY) -m pip install -e '.[test,jax]'
	$(PY) -m ipykernel install --sys-prefix --name skyml --display-name "Python 3.11 (skyml)"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=$(CELL_TIMEOUT)
	KERAS_BACKEND=jax $(PY) -m pytest tests/test_cta_models.py -q

reproduce: $(STAMP)
	$(PY) run_all.py --profile quick

full: $(STAMP)
	$(PY) run_all.py --profile full

full-gpu: $(STAMP)
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

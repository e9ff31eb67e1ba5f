# artstudy: every command sets itself up (a .venv is created and installed when missing or stale).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# CPU fast path (issue 9): glibc allocator settings that remove thousands of page faults per image.
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736
export PYTHONUNBUFFERED := 1

.PHONY: install check readme test test-fast test-slow test-browser study study-smoke explore bench docs clean-runs

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (artstudy)" >/dev/null
	@touch $@

install: $(VENV)/.installed

# Notebooks are the source: exporting and cleaning them must change nothing.
check: install
	@state() { { git diff -- artstudy nbs README.md; git ls-files -o --exclude-standard -- artstudy nbs; } | md5sum; }; \
	before=$$(state); $(BIN)/nbdev-export && $(BIN)/nbdev-clean && $(MAKE) -s readme || exit 1; after=$$(state); \
	if [ "$$before" != "$$after" ]; then \
	  echo "ERROR: nbdev-export/nbdev-clean/readme changed files: notebooks, artstudy/ and README.md are out of sync, or notebooks are not clean."; \
	  git status --short -- artstudy nbs; exit 1; fi; echo "notebooks and modules in sync and clean"

# README.md is generated from nbs/index.ipynb (nbdev-readme needs Quarto, which cannot be installed offline).
readme:
	@$(BIN)/jupyter nbconvert --to markdown --log-level WARN nbs/index.ipynb --stdout > README.md.tmp && mv README.md.tmp README.md

test: check
	$(BIN)/nbdev-test --n-workers 2
	$(BIN)/pytest -q -n 2 --durations=15

test-slow: install
	$(BIN)/nbdev-test --n-workers 2 --flags slow
	$(BIN)/pytest -q -m slow --runslow

study: install
	$(PY) -m artstudy run configs/quick.yaml
	$(PY) -m artstudy report quick

study-smoke: install
	$(PY) -m artstudy run configs/smoke.yaml
	$(PY) -m artstudy report smoke

bench: install
	@mkdir -p bench/out; for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

docs: install
	$(BIN)/jupyter nbconvert --to html --output-dir _docs nbs/*.ipynb

clean-runs:
	rm -rf runs/smoke

# artstudy: every command sets itself up (a .venv is created and installed when missing or stale).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# CPU fast path: artstudy.config.FAST_CPU_ENV (glibc keeps freed memory: thousands fewer page faults per image; OpenMP
# threads sleep instead of spinning, 10-30x faster training on a shared CPU, bench/cpu_fast_path.py) must be set
# before Python starts. Its one definition is in Python; make includes it as exports written into the venv.
FAST_ENV_MK := $(VENV)/fast_cpu_env.mk
-include $(FAST_ENV_MK)
$(FAST_ENV_MK): artstudy/config.py $(VENV)/.installed
	$(PY) -c "from artstudy.config import fast_env_makefile; print(fast_env_makefile(), end='')" > $@.tmp && mv $@.tmp $@
export PYTHONUNBUFFERED := 1

.PHONY: install check readme test test-fast test-slow test-browser study study-smoke battery explore lab bench docs clean-runs

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (artstudy)" >/dev/null
	@touch $@

install: $(VENV)/.installed

# Notebooks are the source: exporting and cleaning them, and rendering the experiment notebooks' parameter cells from
# the one parameter schema (artstudy.params), must change nothing.
check: install
	@state() { { git diff -- artstudy nbs README.md; git ls-files -o --exclude-standard -- artstudy nbs; } | md5sum; }; \
	before=$$(state); $(BIN)/nbdev-export && $(PY) -m artstudy params --sync >/dev/null && $(BIN)/nbdev-clean && $(MAKE) -s readme || exit 1; after=$$(state); \
	if [ "$$before" != "$$after" ]; then \
	  echo "ERROR: nbdev-export/params --sync/nbdev-clean/readme changed files: notebooks, artstudy/ and README.md are out of sync, or notebooks are not clean."; \
	  git status --short -- artstudy nbs; exit 1; fi; echo "notebooks and modules in sync and clean"

# README.md is generated from nbs/index.ipynb (nbdev-readme needs Quarto, which cannot be installed offline).
readme:
	@$(BIN)/jupyter nbconvert --to markdown --log-level WARN nbs/index.ipynb --stdout > README.md.tmp && mv README.md.tmp README.md

# Two workers on two cores: one torch thread each (two threads per worker oversubscribe the cores and run far slower).
test: check
	OMP_NUM_THREADS=1 $(BIN)/nbdev-test --n-workers 2
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 --dist loadfile --durations=15

test-slow: install
	$(BIN)/nbdev-test --n-workers 2 --flags slow
	$(BIN)/pytest -q -m slow --runslow

# Two runs at a time with one thread each: on 2 cores that is twice the throughput of one run with two threads.
STUDY_WORKERS ?= 2
study: install
	$(PY) -m artstudy data fetch --missing
	$(PY) -m artstudy run configs/quick.yaml --workers $(STUDY_WORKERS)
	$(PY) -m artstudy report quick

# The transfer-mode findings on your own collection (labels.csv, class folders or split folders):
# make battery DATA=path/to/collection [LABEL=column] [BUDGET=minutes] [BATTERY_FLAGS="--seeds 5 --dry-run"]
BUDGET ?= 60
battery: install
	@test -n "$(DATA)" || { echo "usage: make battery DATA=path/to/collection [LABEL=column] [BUDGET=60]"; exit 2; }
	$(PY) -m artstudy battery "$(DATA)" --budget $(BUDGET) --workers $(STUDY_WORKERS) $(if $(LABEL),--label "$(LABEL)") $(BATTERY_FLAGS)

study-smoke: install
	$(PY) -m artstudy run configs/smoke.yaml --workers $(STUDY_WORKERS)
	$(PY) -m artstudy report smoke

# The three datasets from their public sources at the pinned commits, verified against their checksums, into data/ (skips verified
# files, resumes). DATASETS= picks some (default: all); DATA_FLAGS passes options, e.g. DATA_FLAGS="--to DIR" or
# DATA_FLAGS="--source file:///mirror/{repository}.git" for a local mirror.
.PHONY: data
DATASETS ?=
DATA_FLAGS ?=
data: install
	$(PY) -m artstudy data fetch $(DATASETS) $(DATA_FLAGS)

# Benchmarks print ratios as JSON and write bench/out/<name>.json (files starting with _ are helpers, not benchmarks).
# `make bench` passes --quick (fewer repeats/images: ~10 min even at load average 7 on 2 cores);
# `make bench BENCH_FLAGS=` runs every benchmark at its full defaults.
BENCH_FLAGS ?= --quick
bench: install
	@mkdir -p bench/out; t0=$$(date +%s); for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b $(BENCH_FLAGS) || exit 1; done; \
	echo "make bench: $$(( $$(date +%s) - t0 )) s, load average $$(cut -d' ' -f1-3 /proc/loadavg)"

docs: install
	$(BIN)/jupyter nbconvert --to html --output-dir _docs nbs/*.ipynb

clean-runs:
	rm -rf runs/smoke

# Filter explorer: nbs/explore.ipynb as a Voilà app, on 127.0.0.1 only. EXPLORE_PORT=8866 by default.
EXPLORE_PORT ?= 8866
# EXPLORE_STUDY=<study> opens that study's runs (e.g. a battery's; default: the quick study). Voilà's arguments are
# artstudy.explorer.VOILA_ARGS (a preheated kernel: later opens in a few seconds).
explore: install
	@test -x $(BIN)/voila || $(PY) -m pip install -q -e ".[explorer]"
	$(if $(EXPLORE_STUDY),ARTSTUDY_EXPLORE_RUNS="$$($(PY) -c 'from artstudy.config import runs_dir; print(runs_dir()/"$(EXPLORE_STUDY)")')") \
	  eval "$(BIN)/voila nbs/explore.ipynb --port=$(EXPLORE_PORT) $$($(PY) -c 'import shlex; from artstudy.explorer import VOILA_ARGS; print(shlex.join(VOILA_ARGS))')"

# Read and rerun the notebooks: JupyterLab on 127.0.0.1 only (with a token), opening nbs/, with the kernel
# `make install` registers ("Python 3 (artstudy)"): JUPYTER_PATH puts this venv's kernels before any in ~/.local.
# LAB_PORT=8888 by default; extra options go in LAB_ARGS (e.g. LAB_ARGS=--no-browser on a remote machine). As root (a
# container), --allow-root is added: JupyterLab refuses root otherwise.
LAB_PORT ?= 8888
LAB_ARGS ?=
LAB_ROOT ?= $(CURDIR)
lab: install
	JUPYTER_PATH="$(abspath $(VENV))/share/jupyter" $(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
	  --ServerApp.root_dir="$(LAB_ROOT)" --LabApp.default_url=/lab/tree/nbs --MappingKernelManager.default_kernel_name=python3 \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# Browser test of the explorer: headless Debian Chromium via Playwright (never `playwright install`); skips without them.
test-browser: install
	@test -x $(BIN)/voila || $(PY) -m pip install -q -e ".[explorer]"
	@test -x /usr/bin/chromium || echo "no /usr/bin/chromium: the browser test will skip (Debian: apt-get install -y chromium)"
	ARTSTUDY_STRICT_TIMING=1 $(BIN)/pytest -q -rs -s tests/test_browser.py tests/test_lab.py

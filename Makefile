# visioncourse: `make run` runs the course's main job, `make test` runs every test, `make test-matrix` (CI) runs them
# on every Python the course supports. They build the virtual environment (.venv) when it is missing: the package and
# its dev extras from settings.ini, at the exact versions verified together in constraints.txt.
# Written for any GNU make from 3.81 (a Mac's) on: no make-4 features (--output-sync, .ONESHELL, ::=, $(file ...)).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Small settings so the run takes a few minutes on a 2-core CPU; override on the command line.
RUN_ARGS ?= --epochs 1 --size 64 --bs 32 --arch resnet18 --out runs/pets --force

CONSTRAINTS := constraints.txt

.PHONY: venv run test test-matrix test-python test-gpu gpu-preflight readme sync-check clean-nbs-check nbtest pytest clean-check chromium lab clean bench

venv: $(STAMP)

$(STAMP): settings.ini setup.py $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); the course needs 3.11 or newer (make ... PYTHON=python3.12)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) --upgrade pip
	@start=$$(date +%s); $(BIN)/python -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) -e ".[dev]" && \
	  echo "make: $(VENV) installed in $$(( $$(date +%s) - start )) s"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/visioncourse train pets $(RUN_ARGS)
	$(BIN)/visioncourse predict runs/pets/model.pkl "$$($(BIN)/python -W ignore -c 'from visioncourse.data import dataset_path; print(sorted((dataset_path("pets")/"images").glob("*.jpg"))[0])')"

# Notebooks and library in sync: nbdev_export must not change lib/.
sync-check: $(STAMP)
	@rm -rf $(VENV)/lib-before && cp -r lib $(VENV)/lib-before
	$(BIN)/nbdev_export
	@diff -r -x __pycache__ -x '*.egg-info' $(VENV)/lib-before lib || { echo "nbdev_export changed lib/: run nbdev_export and commit lib/ with the notebooks"; exit 1; }
	@echo "nbdev_export: lib/ in sync with nbs/"
	$(BIN)/python tools/readme.py --check

# Notebooks clean, as nbdev's own CI checks: nbdev_clean (execution counts, metadata) must not change any notebook.
# It cleans a copy, so a failing check changes nothing; `.venv/bin/nbdev_clean` (or the pre-commit hook) fixes them.
clean-nbs-check: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cp -r nbs "$$tmp/nbs" && $(BIN)/nbdev_clean --fname "$$tmp/nbs" && \
	  { diff -rq -x .ipynb_checkpoints nbs "$$tmp/nbs" || { echo "nbdev_clean would change the notebooks above: run .venv/bin/nbdev_clean (or install the pre-commit hook, see README) and commit"; exit 1; }; }
	@echo "nbdev_clean: every notebook is clean"

# README.md is generated from nbs/index.ipynb (nbdev_readme needs quarto, which cannot be installed offline).
readme: $(STAMP)
	$(BIN)/python tools/readme.py

# Every notebook, every cell: the `#| cuda` cells too, rehearsed on the CPU at quick sizes
# (VISIONCOURSE_REHEARSAL=1; see nbs/00_settings.ipynb). Only the device differs from a GPU run.
nbtest: $(STAMP)
	time VISIONCOURSE_REHEARSAL=1 $(BIN)/nbdev_test --n_workers $(NB_WORKERS) --timing --flags cuda

# The package, the command line, bad input, the web app, and every notebook run in JupyterLab in headless Chromium
# (without Chromium the browser tests are skipped with one line saying how to install it; under CI=true they fail).
PYTEST_PATHS ?= tests/
pytest: $(STAMP) chromium
	time $(BIN)/python -m pytest -q --durations=15 $(PYTEST_PATHS) $(PYTEST_ARGS)

# Chromium for the browser tests. Found (tests/helpers.py's find_chromium: $$VISIONCOURSE_CHROMIUM, the PATH, a Mac's
# /Applications, Playwright's download): nothing to do. Missing: under CI as root on Debian, Debian's package is
# installed; anywhere else nothing is installed, and pytest skips the browser tests with one line saying how to install
# it without root (`.venv/bin/python -m playwright install chromium`), or fails them under CI=true.
chromium: $(STAMP)
	@if PYTHONPATH=tests $(BIN)/python -c 'import sys, helpers; sys.exit(helpers.find_chromium() is None)'; then exit 0; \
	elif [ -n "$$CI" ] && [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then apt-get update -q && apt-get install -y -q chromium; fi

# Nothing the notebooks or tests ran may have left files in the repository.
clean-check:
	@test ! -e nbs/models || { echo "nbs/models/ was written by a notebook"; exit 1; }
	@left="$$(git status --porcelain --ignored --untracked-files=all -- nbs lib bench tools | grep -E '^(\?\?|!!)' | grep -v -E '__pycache__|\.egg-info' || true)"; \
	  test -z "$$left" || { echo "files left in the repository by the tests:"; echo "$$left"; exit 1; }
	@echo "clean-check: nothing was written into nbs/, lib/, bench/ or tools/"

# One run of each notebook serves both notebook checks: the real-browser Run All (tests/test_notebooks_browser.py, two
# notebooks at a time in JupyterLab) runs every notebook as nbdev_test does (IN_TEST=1, VISIONCOURSE_REHEARSAL=1: every
# cell, `#| cuda` ones rehearsed on the CPU; only the kernels load batches without DataLoader worker processes) and fails on any error or warning, so `make test` does not run nbdev_test
# as well; the rest of pytest runs beside it. nbdev_test itself runs every notebook in `make test-python` (3.12 and
# 3.13 in CI), and alone in `make nbtest`. Without Chromium (and not under CI) `make test` runs nbdev_test instead;
# `make test NBTEST=nbdev_test` runs nbdev_test beside the whole pytest suite (each notebook then runs twice).
# Each torch process uses one thread, so the cores stay busy to the end; tools/steps.py keeps each step's output in
# a log file and prints it, with its time, when the step ends (what make 4's --output-sync does, in any make).
NB_WORKERS ?= 1
NBTEST ?= browser
test: sync-check clean-nbs-check chromium
	@if [ "$(NBTEST)" = browser ] && PYTHONPATH=tests $(BIN)/python -c 'import sys, helpers; sys.exit(helpers.find_chromium() is None)'; then \
	  echo "make test: $$($(BIN)/python --version) in $(VENV); the browser Run All of every notebook (as nbdev_test runs it) and the rest of pytest side by side"; \
	  OMP_NUM_THREADS=1 $(BIN)/python tools/steps.py \
	    browser-run-all 'VISIONCOURSE_BROWSER_REHEARSAL=1 $(MAKE) --no-print-directory pytest PYTEST_PATHS=tests/test_notebooks_browser.py' \
	    pytest '$(MAKE) --no-print-directory pytest PYTEST_ARGS=--ignore=tests/test_notebooks_browser.py'; \
	else \
	  echo "make test: $$($(BIN)/python --version) in $(VENV); nbtest and pytest run side by side, each log printed when it ends"; \
	  OMP_NUM_THREADS=1 $(BIN)/python tools/steps.py nbtest '$(MAKE) --no-print-directory nbtest NB_WORKERS=2' \
	                                                 pytest '$(MAKE) --no-print-directory pytest'; \
	fi
	@$(MAKE) --no-print-directory clean-check

# Another Python: `make test-python PY=3.12` builds .venv-3.12 from pyenv's latest 3.12.x (or python3.12 on the PATH)
# with the same pins (constraints-3.12.txt instead, if one exists for a pin without a wheel for that Python), then runs
# `make nbtest` (every notebook) and `make pytest` in it, side by side. The real-browser Run All of every notebook
# (tests/test_notebooks_browser.py) runs in `make test` only, on one Python: it checks JupyterLab, not the interpreter.
# A missing Python is skipped with one line, or an error under CI.
PY ?= 3.12
PYTEST_ARGS ?=
test-python:
	@py=; for c in $$(ls -d "$$(pyenv root 2>/dev/null)"/versions/$(PY).*/bin/python 2>/dev/null) $$(command -v python$(PY)); do \
	  test "$$($$c -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$(PY)" && py=$$c; done; \
	if [ -z "$$py" ]; then \
	  if [ -n "$$CI" ]; then echo "make test-python: ERROR: no Python $(PY) (neither pyenv's versions/$(PY).* nor python$(PY) on the PATH): CI tests every Python the course claims"; exit 1; fi; \
	  echo "make test-python: skipped: no Python $(PY) here (install it, e.g. pyenv install $(PY))"; exit 0; fi; \
	c=constraints-$(PY).txt; test -f $$c || c=$(CONSTRAINTS); \
	args="--no-print-directory VENV=.venv-$(PY) PYTHON=$$py CONSTRAINTS=$$c"; \
	$(MAKE) $$args venv && \
	echo "make test-python: $$(.venv-$(PY)/bin/python --version) in .venv-$(PY) (pins: $$c); nbtest and pytest run side by side" && \
	OMP_NUM_THREADS=1 .venv-$(PY)/bin/python tools/steps.py nbtest-$(PY) "$(MAKE) $$args nbtest NB_WORKERS=2" \
	  pytest-$(PY) "$(MAKE) $$args pytest PYTEST_ARGS=--ignore=tests/test_notebooks_browser.py" && \
	$(MAKE) --no-print-directory clean-check

# CI (.ci/run): `make test` on the default Python, then the notebooks and the pytest suite on each other Python the
# course supports (settings.ini's min_python to the newest), each step timed.
MATRIX ?= 3.12 3.13
test-matrix:
	@start=$$(date +%s); $(MAKE) --no-print-directory test && \
	for v in $(MATRIX); do s=$$(date +%s); $(MAKE) --no-print-directory test-python PY=$$v || exit 1; \
	  echo "make test-matrix: Python $$v took $$(( $$(date +%s) - s )) s"; done && \
	echo "make test-matrix: every Python passed ($$($(BIN)/python --version | cut -d' ' -f2) and $(MATRIX)) in $$(( $$(date +%s) - start )) s"

# On a GPU machine: the notebooks' `#| cuda` cells at the book's sizes, in mixed precision. First the pre-flight
# (torch and its CUDA build, the GPUs and their memory, /dev/shm), which stops with the reason when CUDA is unusable.
# Then each notebook with GPU cells in a process of its own: nbdev_test's worker pool reuses processes, and a run
# leaves process-wide state behind (set_seed(reproducible=True) turns cuDNN's deterministic mode on).
# VISIONCOURSE_GPU_BS_SCALE=0.5 and VISIONCOURSE_WORKERS=4 scale the book's batches and workers down (nbs/00_settings.ipynb).
# HASH: a '#' that every make version reads the same inside $(shell ...) (make 4.3 stopped removing the backslash of \#)
HASH := \#
GPU_NBS ?= $(shell grep -l '"$(HASH)| cuda' nbs/[0-9]*.ipynb)
gpu-preflight: $(STAMP)
	@$(BIN)/python tools/gpu_preflight.py

test-gpu: gpu-preflight
	@failed=""; for nb in $(GPU_NBS); do \
	  echo "make test-gpu: $$nb"; \
	  start=$$(date +%s); \
	  $(BIN)/nbdev_test --path $$nb --flags cuda --do_print || failed="$$failed $$nb"; \
	  echo "make test-gpu: $$nb took $$(( $$(date +%s) - start )) s"; \
	done; \
	test -z "$$failed" || { echo "make test-gpu: failed:$$failed"; exit 1; }
	@echo "make test-gpu: every GPU cell passed"

lab: $(STAMP)
	$(BIN)/jupyter lab nbs

# On a CPU at small sizes (a smoke run with real figures); bench/RESULTS.md has the commands at the book's sizes for a GPU.
bench: $(STAMP)
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/train_throughput.py --arch resnet18 --size 32 --bs 4 8 --warmup 1 --steps 2 --repeats 1
	$(BIN)/python bench/train_throughput.py --mode pipeline --arch resnet18 --size 32 --bs 8 --warmup 1 --steps 2 --repeats 1
	$(BIN)/python bench/epoch_throughput.py --images 148 --arch resnet18 --size 32 --presize 48 --bs 16 --epochs 1 --workers 0 --model-steps 3

clean:
	rm -rf $(VENV) runs _docs _proc tests/screenshots

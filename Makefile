# visioncourse: `make run` runs the course's main job, `make test` runs every test.
# Both build the virtual environment (.venv) when it is missing: the package and its dev extras from settings.ini,
# at the exact versions verified together in constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Small settings so the run takes a few minutes on a 2-core CPU; override on the command line.
RUN_ARGS ?= --epochs 1 --size 64 --bs 32 --arch resnet18 --out runs/pets --force

CONSTRAINTS := constraints.txt

.PHONY: venv run test test-gpu gpu-preflight readme sync-check clean-nbs-check nbtest pytest clean-check chromium lab clean bench

venv: $(STAMP)

$(STAMP): settings.ini setup.py $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) -e ".[dev]"
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

# The package, the command line, bad input, the web app, and every notebook run in JupyterLab in headless Chromium.
pytest: $(STAMP) chromium
	time $(BIN)/python -m pytest -q --durations=15 tests/

# Debian's Chromium for the browser tests (Playwright's own browser download needs the internet).
chromium:
	@command -v chromium >/dev/null || test -x /usr/bin/chromium || { apt-get update -q && apt-get install -y -q chromium; }

# Nothing the notebooks or tests ran may have left files in the repository.
clean-check:
	@test ! -e nbs/models || { echo "nbs/models/ was written by a notebook"; exit 1; }
	@left="$$(git status --porcelain --ignored --untracked-files=all -- nbs lib bench tools | grep -E '^(\?\?|!!)' | grep -v -E '__pycache__|\.egg-info' || true)"; \
	  test -z "$$left" || { echo "files left in the repository by the tests:"; echo "$$left"; exit 1; }
	@echo "clean-check: nothing was written into nbs/, lib/, bench/ or tools/"

# nbdev_test (two notebooks at a time) and pytest (whose browser test also runs two notebooks at a time) run side by
# side, each torch process on one thread, so the cores stay busy to the end; each prints its log when it ends.
# `make nbtest` or `make pytest` runs one of them alone.
NB_WORKERS ?= 1
test: sync-check clean-nbs-check
	@echo "make test: nbtest and pytest run side by side; each prints its log when it finishes"
	time OMP_NUM_THREADS=1 $(MAKE) --no-print-directory -j2 --output-sync=target NB_WORKERS=2 nbtest pytest
	@$(MAKE) --no-print-directory clean-check

# On a GPU machine: the notebooks' `#| cuda` cells at the book's sizes, in mixed precision. First the pre-flight
# (torch and its CUDA build, the GPUs and their memory, /dev/shm), which stops with the reason when CUDA is unusable.
# Then each notebook with GPU cells in a process of its own: nbdev_test's worker pool reuses processes, and a run
# leaves process-wide state behind (set_seed(reproducible=True) turns cuDNN's deterministic mode on).
# VISIONCOURSE_GPU_BS_SCALE=0.5 and VISIONCOURSE_WORKERS=4 scale the book's batches and workers down (nbs/00_settings.ipynb).
GPU_NBS ?= $(shell grep -l '"\#| cuda' nbs/[0-9]*.ipynb)
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

bench: $(STAMP)
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(VENV) runs _docs _proc tests/screenshots

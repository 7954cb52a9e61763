# visioncourse: `make run` runs the course's main job, `make test` runs every test.
# Both build the virtual environment (.venv) from settings.ini when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Small settings so the run takes a few minutes on a 2-core CPU; override on the command line.
RUN_ARGS ?= --epochs 1 --size 64 --bs 32 --arch resnet18 --out runs/pets --force

.PHONY: venv run test test-gpu readme sync-check nbtest pytest clean-check chromium lab clean bench

venv: $(STAMP)

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
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
test: sync-check
	@echo "make test: nbtest and pytest run side by side; each prints its log when it finishes"
	time OMP_NUM_THREADS=1 $(MAKE) --no-print-directory -j2 --output-sync=target NB_WORKERS=2 nbtest pytest
	@$(MAKE) --no-print-directory clean-check

# On a GPU machine: the notebooks' `#| cuda` cells at the book's sizes, in mixed precision.
test-gpu: $(STAMP)
	@$(BIN)/python -c "import sys, torch; torch.cuda.is_available() or sys.exit('make test-gpu: PyTorch sees no CUDA GPU on this machine; make test rehearses the GPU cells on the CPU instead')"
	time $(BIN)/nbdev_test --n_workers 1 --timing --flags cuda

lab: $(STAMP)
	$(BIN)/jupyter lab nbs

bench: $(STAMP)
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(VENV) runs _docs _proc tests/screenshots

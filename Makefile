# visioncourse: `make run` runs the course's main job, `make test` runs every test.
# Both build the virtual environment (.venv) from settings.ini when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Small settings so the run takes a few minutes on a 2-core CPU; override on the command line.
RUN_ARGS ?= --epochs 1 --size 64 --bs 32 --arch resnet18 --out runs/pets --force

.PHONY: venv run test test-gpu readme sync-check nbtest pytest lab clean bench

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

nbtest: $(STAMP)
	$(BIN)/nbdev_test --n_workers 1 --timing

pytest: $(STAMP)
	$(BIN)/python -m pytest -q tests/

test: sync-check nbtest pytest

# On a GPU machine: the notebooks' `#| cuda` cells too (book-sized training, mixed precision).
test-gpu: $(STAMP)
	$(BIN)/nbdev_test --n_workers 1 --timing --flags cuda

lab: $(STAMP)
	$(BIN)/jupyter lab nbs

bench: $(STAMP)
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(VENV) runs _docs _proc

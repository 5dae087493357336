# dis2 — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dis2-installed

.PHONY: study install demo test test-notebooks test-pytest check-clean export clean-nbs figures results long-budget bench lab gpu-check distclean

install: $(STAMP)

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

## The main job: build the embedded dataset if absent, train, evaluate every scenario, write results/ and figures/.
demo: install
	$(BIN)/dis2 demo

## Whole suite: notebooks are clean and exported, every notebook executes in smoke mode, then pytest.
test: install check-clean test-notebooks test-pytest

check-clean: install
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  if [ -n "$$(git status --porcelain --untracked-files=all -- nbs dis2)" ]; then \
	    git status --short -- nbs dis2; \
	    echo "nbdev_export/nbdev_clean changed tracked files: run them and commit the result"; exit 1; fi; fi

test-notebooks: install
	DIS2_SMOKE=1 DIS2_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing

test-pytest: install
	DIS2_SMOKE=1 DIS2_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests

export: install
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

figures: install
	$(BIN)/dis2 figures

results: install
	$(BIN)/dis2 figures --results-only

## The fair study (dis2.study: lr search on val, 5 seeds, paired CIs; resumable, records in results/study/), two worker
## processes, then the comparison and ablation notebooks' tables and figures from its records.
long-budget: study
	$(BIN)/dis2 figures --only 21,22,23,24,25,32,28

study: install
	OMP_NUM_THREADS=1 DIS2_THREADS=1 $(BIN)/dis2 study --workers 2 --lr-edge
	OMP_NUM_THREADS=1 DIS2_THREADS=1 $(BIN)/dis2 study --workers 2 --plan rare

bench: install
	$(BIN)/dis2 bench --config dis2

## JupyterLab on nbs/ with the project's kernel "Python (dis2)" (this venv), registered in the venv. LAB_ARGS: extra flags, e.g. LAB_ARGS='--no-browser --port 8899'.
LAB_ARGS ?=
lab: install
	$(BIN)/python -m ipykernel install --sys-prefix --name dis2 --display-name "Python (dis2)" >/dev/null
	$(BIN)/jupyter lab --ServerApp.root_dir=nbs --MappingKernelManager.default_kernel_name=dis2 $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

## On a CUDA machine: AMP + channels-last training steps, resume, tile prediction, a 1-process NCCL DDP step, compared with CPU; skips (exit 0) without a GPU.
gpu-check: install
	$(BIN)/python tools/gpu_check.py

distclean:
	rm -rf $(VENV) build *.egg-info

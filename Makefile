# Two commands after cloning:  make report   (set up, fetch data, run every notebook, render report/)
#                              make test     (set up, then the test suite)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup data report book test test-fast lab tensorboard tensorboard-shots benchmark clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)

data: setup  ## make sure the three data sets are in data/ and decoded
	$(BIN)/python -m helpers.data

report: setup  ## execute notebooks/NN_*.ipynb in place (full budget), then build the book into report/
	-$(BIN)/python -m helpers.data  # a missing data set is listed with how to get it; its sections are skipped
	$(BIN)/python -m helpers.report --budget full

book: setup  ## the book from the committed notebooks, no training (seconds): report/_build/html/index.html
	$(BIN)/python -m helpers.report --render-only

test: setup  ## the whole test suite (notebooks run in the quick budget): about 10 minutes on 2 cores
	$(BIN)/python -m pytest

test-fast: setup  ## the fast tests only (no notebooks, kill-and-resume, Ray or subprocess commands): under 2 minutes
	$(BIN)/python -m pytest -m "not slow"

benchmark: setup  ## the engine vs a typical DataLoader pipeline, then images/s and GFLOP/s per model shape (ARGS=--parity: bf16 vs fp32)
	$(BIN)/python -m helpers.reporting.bench $(ARGS)

lab: setup  ## JupyterLab on the project
	$(BIN)/jupyter lab --notebook-dir=.

tensorboard: setup  ## TensorBoard over every run the notebooks logged
	$(BIN)/tensorboard --logdir outputs/runs

tensorboard-shots: setup  ## screenshots of TensorBoard's Scalars and HParams dashboards (headless Chromium) into docs/tensorboard/
	$(BIN)/python -m helpers.reporting.tbshots

clean:  ## remove what runs produce (not the data, not the venv)
	rm -rf outputs outputs-quick report

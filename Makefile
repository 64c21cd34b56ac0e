# The two commands a new user needs: `make demo` and `make test`.
# Each does its own set-up (a virtual env in .venv, the package installed into it).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: demo test bench model clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Live path only (no torch).
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Tests also train small models: torch pinned to the CPU build that lies on disk.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,train]'
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/cortexcast demo $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q $(ARGS)

bench: $(VENV)/.installed-demo
	$(BIN)/cortexcast bench $(ARGS)

# How the bundled model (decoder/models/cortexcast_sim.onnx) was made: ~3 min of simulation
# (the 'easy' preset the demo's rig runs), ~2 min of training on 2 CPU cores.
model: $(VENV)/.installed-test
	$(BIN)/cortexcast simulate --preset easy --out runs/simdata --trials 120 --oracle-clips 4 --oracle-repeats 3 --force
	$(BIN)/cortexcast train --data runs/simdata --out decoder/models/cortexcast_sim.onnx --ensemble 1 --readout 128 --lag 5
	$(BIN)/cortexcast evaluate --data runs/simdata --model decoder/models/cortexcast_sim.onnx --tier final_test_main

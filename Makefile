# Two commands on a fresh machine: `make demo` and `make test`. Both install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The tests and the demo never touch the network: the Hugging Face hub is not needed.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Local datasets for CI and this machine (the loaders try the hub first when it is reachable).
ifneq ($(wildcard ../shared/data),)
export CAPTUM_LAYER_SALIENCY_DATA ?= $(abspath ../shared/data)
endif

.PHONY: install test test-fast demo lint typecheck bench tutorials clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: this pins the local CPU wheel; a plain `pip install torch` pulls GBs of CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

demo: install
	$(BIN)/python -m captum_layer_saliency demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy captum_layer_saliency

bench: install
	$(BIN)/python benchmarks/bench_dls.py

# Re-execute the tutorials from their jupytext sources (tutorials/NN_name.py) into the notebooks.
tutorials: install
	$(BIN)/python tutorials/_run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info

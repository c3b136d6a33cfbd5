# One setup step used by every target: virtualenv, CPU torch first (a bare `torch` would pull a CUDA build), then
# hf_slim with its extras, and FFmpeg (audio decoding with torchcodec) when it is missing.
PYTHON_BIN ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hf-slim-setup
TORCH_VERSION ?= 2.13.0
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHECK_DIRS := hf_slim tests examples benchmarks

.PHONY: setup quickstart test test-slow style quality clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v ffmpeg >/dev/null 2>&1 || { echo "Installing FFmpeg (audio decoding)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg >/dev/null; }
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(FIND_LINKS) torch==$(TORCH_VERSION)
	$(PY) -m pip install -q $(FIND_LINKS) -e ".[onnx,audio,dev]"
	@touch $(STAMP)

# README's first command: the offline quickstart recipe (ViT on scikit-learn's bundled digits: train, distil, prune,
# quantize, evaluate, report), no downloads. Re-running resumes: finished stages are skipped.
quickstart: setup
	$(VENV)/bin/hf-slim run recipes/quickstart.yaml --output-dir outputs/quickstart

# README's second command (and .ci/run): the default test suite, slow tests excluded.
test: setup
	$(PY) -m pytest tests

test-slow: setup
	$(PY) -m pytest tests -m slow

style: setup
	$(VENV)/bin/ruff format $(CHECK_DIRS)
	$(VENV)/bin/ruff check --fix $(CHECK_DIRS)

quality: setup
	$(VENV)/bin/ruff check $(CHECK_DIRS)
	$(VENV)/bin/ruff format --check $(CHECK_DIRS)

clean:
	rm -rf $(VENV) outputs tmp_trainer .pytest_cache .ruff_cache *.egg-info

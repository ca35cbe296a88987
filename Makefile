# Two commands from a fresh clone: `make repro` and `make test`.
PYTHON ?= python3
# A CUDA build of torch: `make repro TORCH_INDEX=https://download.pytorch.org/whl/cu128` installs the
# pinned torch from that index before requirements.txt (empty: torch as requirements.txt resolves it).
TORCH_INDEX ?=
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup repro test clean

setup: $(VENV)/.installed

# Reinstall only when requirements or the package metadata change.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(VENV)/bin/pip install -q --index-url $(TORCH_INDEX) "$$(grep -m1 '^torch==' requirements.txt)")
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

repro: setup
	dvc repro
	dvc checkout --relink -q  # outputs DVC left as copies (bytes already cached) become links: stored once

test: setup
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV)

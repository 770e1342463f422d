# aviary — the two commands: `make serve` and `make test`.
# CPU machines get the CPU torch build pinned below; on a CUDA machine run
# `make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"` (or any CUDA build).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-test serve test lint fixtures clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

serve: install
	$(VENV)/bin/aviary serve --host $(HOST) --port $(PORT)

test: install-test
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check models service tests tools bench

# Regenerates tests/fixtures with NeMo itself (dev only; needs the NeMo virtualenv, see tools/README.md).
fixtures:
	bash tools/make_nemo_venv.sh
	/work/nemo-venv/bin/python tools/make_fixtures.py --out tests/fixtures

clean:
	rm -rf $(VENV) .pytest_cache

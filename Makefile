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

# With nothing configured (AVIARY_MODELS / AVIARY_MODEL_DIR unset) it serves the bundled aviary-demo-en when
# this checkout ships it (models/assets/), else the NeMo-made fixture checkpoints (random weights).
serve: install
	@if [ -z "$$AVIARY_MODELS$$AVIARY_MODEL_DIR" ] && [ ! -f models/assets/aviary-demo-en.nemo ]; then \
		export AVIARY_MODEL_DIR=tests/fixtures/models; fi; \
	$(VENV)/bin/aviary serve --host $(HOST) --port $(PORT)

test: install-test
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check models service tests tools bench

# Regenerates the NeMo parity fixtures in tests/fixtures/models with NeMo itself (dev only; creates the NeMo
# virtualenv if needed, see tools/README.md). The test audio is only made when some of it is missing: the
# committed files must stay byte-identical, as every reference depends on them.
NEMO_VENV ?= /work/nemo-venv
FIXTURE_AUDIO := manifest.json s1_en_us.wav s2_en_f3.wav s3_en_m7.wav s4_en_m3.wav s5_en_f2.wav exact_1s.wav \
	len_16037.wav silence_1s.wav fmt_44k_stereo.wav fmt_22k.flac fmt_16k.ogg fmt_16k.mp3 fmt_16k.m4a
fixtures:
	NEMO_VENV=$(NEMO_VENV) bash tools/make_nemo_venv.sh
	@missing=0; for f in $(FIXTURE_AUDIO); do [ -f tests/fixtures/audio/$$f ] || missing=1; done; \
	if [ $$missing = 1 ]; then bash tools/make_test_audio.sh; else echo "tests/fixtures/audio complete, kept"; fi
	$(NEMO_VENV)/bin/python tools/make_fixtures.py --out tests/fixtures/models

clean:
	rm -rf $(VENV) .pytest_cache

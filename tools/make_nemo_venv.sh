#!/usr/bin/env bash
# Creates the NeMo virtualenv used (only) to regenerate the parity fixtures. Idempotent: does nothing if the
# venv already imports the pinned NeMo.
#
#   bash tools/make_nemo_venv.sh
#
# Environment overrides:
#   NEMO_VENV        venv path                          (default /work/nemo-venv)
#   PYTHON           interpreter used to create it      (default python3; NeMo 3.0 needs >= 3.10)
#   TORCH            torch requirement                  (default torch==2.13.0)
#   TORCH_PIP_ARGS   extra pip args for torch, e.g. "--index-url https://download.pytorch.org/whl/cpu"
#                    to get the small CPU build where no local wheel is available
#   NEMO             NeMo requirement                   (default nemo_toolkit[asr]==3.0.0)
set -euo pipefail

VENV="${NEMO_VENV:-/work/nemo-venv}"
PY="${PYTHON:-python3}"
TORCH_REQ="${TORCH:-torch==2.13.0}"
NEMO_REQ="${NEMO:-nemo_toolkit[asr]==3.0.0}"
NEMO_VERSION="${NEMO_REQ##*==}"

check() {
    "$VENV/bin/python" - "$NEMO_VERSION" <<'PY' 2>/dev/null
import sys
import nemo
import nemo.collections.asr  # noqa: F401  (fails if the ASR extras are missing)
want = sys.argv[1]
if want and nemo.__version__ != want:
    sys.exit(f"nemo {nemo.__version__} != {want}")
import torch, sentencepiece, librosa, soundfile  # noqa: F401,E401
print(f"nemo {nemo.__version__}, torch {torch.__version__}, sentencepiece {sentencepiece.__version__}, "
      f"librosa {librosa.__version__}")
PY
}

if [ -x "$VENV/bin/python" ] && check; then
    echo "NeMo venv ready: $VENV"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, so that NeMo's dependency resolution keeps this build (CPU wheel if available)
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install ${TORCH_PIP_ARGS:-} "$TORCH_REQ"
"$VENV/bin/python" -m pip install "$NEMO_REQ"

if ! check; then
    echo "NeMo venv at $VENV does not import nemo.collections.asr; see the pip output above" >&2
    exit 1
fi
echo "NeMo venv ready: $VENV"

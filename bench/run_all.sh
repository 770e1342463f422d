#!/usr/bin/env bash
# Runs every benchmark in sequence and prints the targets table.
#   bash bench/run_all.sh            # full runs on the 110M bench model (~15 min on 2 quiet cores)
#   bash bench/run_all.sh --quick    # tiny fixture model, smoke run
# Env: WAIT_QUIET=3 (before each script wait until other processes are idle for 20 s and the 1-min load
#      average is <= this; 0: do not wait),
#      NEMO_PY=/work/nemo-venv/bin/python, PY=.venv/bin/python, EXTRA="--device cuda" (passed to each script).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NEMO_PY=${NEMO_PY:-/work/nemo-venv/bin/python}
WAIT_QUIET=${WAIT_QUIET:-3}
QUICK=()
[[ "${1:-}" == "--quick" ]] && QUICK=(--quick) && WAIT_QUIET=0
COMMON=(--wait-quiet "$WAIT_QUIET" ${EXTRA:-} "${QUICK[@]}")

"$PY" bench/make_audio.py
if [[ -x "$NEMO_PY" ]]; then
  PYTHONPATH="$PWD" "$NEMO_PY" bench/compare_nemo.py "${COMMON[@]}"
  PYTHONPATH="$PWD" "$NEMO_PY" bench/ceiling.py --engines aviary,nemo "${COMMON[@]}"
else
  echo "no NeMo virtualenv at $NEMO_PY: aviary only" >&2
  "$PY" bench/compare_nemo.py --engines aviary "${COMMON[@]}"
  "$PY" bench/ceiling.py --engines aviary "${COMMON[@]}"
fi
"$PY" bench/service.py "${COMMON[@]}"
"$PY" bench/memory.py "${COMMON[@]}"
"$PY" bench/profile_runtime.py "${COMMON[@]}"
"$PY" bench/report.py "${QUICK[@]}"

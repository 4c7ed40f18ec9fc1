#!/usr/bin/env bash
# README command 2: set up the pinned environment (if needed) and run the fast test layer (no end-to-end dvc runs).
# The full suite, as CI runs it: bash scripts/test.sh --full   (adds the slow dvc end-to-end tests, about 15 min)
# Other arguments go to pytest (e.g. -m full for the full-size calibration, -m cuda on a GPU machine).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [[ ${1:-} == --full ]]; then
    shift
    exec python -m pytest --durations=15 -m "not full" "$@"
fi
if [[ " $* " != *" -m "* ]]; then
    echo "== the fast layer; the full suite: bash scripts/test.sh --full =="
    exec python -m pytest --durations=15 -m "not slow and not full" "$@"
fi
exec python -m pytest --durations=15 "$@"

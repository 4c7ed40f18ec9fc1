#!/usr/bin/env bash
# README command 2: set up the pinned environment (if needed) and run the fast test layer (no end-to-end dvc runs),
# spread over the machine's cores (pytest-xdist; one torch thread per worker).
# The full suite, as CI runs it: bash scripts/test.sh --full   (adds the slow dvc end-to-end tests)
# Other arguments go to pytest (e.g. -m full for the full-size calibration, -m cuda on a GPU machine, -n 0 for one
# process).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
workers=(-n "${PYTEST_WORKERS:-auto}" --dist loadgroup)  # loadgroup: a file marked xdist_group stays on one worker
if [[ ${1:-} == --full ]]; then
    shift
    exec python -m pytest "${workers[@]}" --durations=15 -m "not full" "$@"
fi
if [[ " $* " != *" -m "* ]]; then
    echo "== the fast layer; the full suite: bash scripts/test.sh --full =="
    exec python -m pytest "${workers[@]}" --durations=15 -m "not slow and not full" "$@"
fi
exec python -m pytest "${workers[@]}" --durations=15 "$@"

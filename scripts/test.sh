#!/usr/bin/env bash
# README command 2: set up the pinned environment (if needed) and run the full test suite.
# Extra arguments go to pytest (e.g. -m "not slow" for the fast layer only).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python -m pytest --durations=15 "$@"

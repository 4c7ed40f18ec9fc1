#!/usr/bin/env bash
# README command 1: set up the pinned environment (if needed) and run the pipeline on params.yaml.
# Extra arguments go to `dvc repro` (e.g. a stage name, or --force).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
dvc repro "$@"
echo "== done: reports/report.md; compare runs with 'dvc exp show' / 'dvc metrics diff' =="

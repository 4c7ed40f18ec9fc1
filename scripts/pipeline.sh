#!/usr/bin/env bash
# README command 1: set up the pinned environment (if needed) and run the pipeline on params.yaml.
#
#   bash scripts/pipeline.sh                    # dvc repro: the default (params.yaml as it is)
#   bash scripts/pipeline.sh prepare            # extra arguments go to `dvc repro` (a stage name, --force, ...)
#   bash scripts/pipeline.sh -S data.source=folder -S data.folder=/path/to/images   # with -S: `dvc exp run`, an
#                                               # experiment with those params, kept beside the others
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
experiment=
for arg in "$@"; do
    case $arg in -S | --set-param | -S?* | --set-param=*) experiment=1 ;; esac
done
if [[ -n $experiment ]]; then
    dvc exp run "$@"
    echo "== done: reports/report.md (this experiment's, in the workspace); all experiments: 'dvc exp show' =="
else
    dvc repro "$@"
    echo "== done: reports/report.md; compare runs with 'dvc exp show' / 'dvc metrics diff' =="
fi

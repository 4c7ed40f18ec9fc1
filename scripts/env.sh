#!/usr/bin/env bash
# Creates (or refreshes) .venv with the exact versions of requirements.lock and installs ddpmlab
# into it in editable mode. Sourced by scripts/pipeline.sh and scripts/test.sh; safe to rerun.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: $PYTHON is $("$PYTHON" --version 2>&1); Python >= 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi

stamp=.venv/.requirements.lock.sha256
want=$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    echo "== setting up .venv from requirements.lock (torch with CUDA wheels: a few GB, about 2-3 minutes) =="
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
# dvc plots pages that render offline (vega, vega-lite, vega-embed inline; fetched once from the npm registry)
if ! python scripts/offline_plots.py --check >/dev/null 2>&1; then
    python scripts/offline_plots.py || echo "warning: no offline plots template (above); dvc plots pages will need internet to draw their charts" >&2
fi

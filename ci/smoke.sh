#!/usr/bin/env bash
# The CI smoke experiment pair: the default params with small overrides, and the same with another T.
# Prints `dvc exp show --md`, renders `dvc plots diff` of the pair, writes reports/compare/compare.md, and runs
# the regression gate.
# Usage: bash ci/smoke.sh            (expects scripts/env.sh to have put .venv on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."

dvc exp remove smoke-base smoke-T100 >/dev/null 2>&1 || true
# presets/smoke.yaml: 48 images at 16x16, a tiny U-Net, 40 epochs, the real download, prepare and Inception path
ddpmlab preset presets/smoke.yaml -n smoke-base -S T=200
ddpmlab preset presets/smoke.yaml -n smoke-T100 -S T=100
echo "== dvc exp show (README's view: what differs, the dependency columns dropped) =="
COLUMNS=120 dvc exp show --only-changed --no-pager --precision 3 --drop '.*/[^:]*$|Created'
echo "== dvc plots diff (both runs' figures side by side: reports/compare/plots/index.html) =="
dvc plots diff smoke-base smoke-T100 -o reports/compare/plots
for rev in smoke-base smoke-T100; do
    grep -q "static/${rev}_reports_sample_grid.png" reports/compare/plots/index.html \
        || { echo "smoke: dvc plots diff shows no sample grid of $rev" >&2; exit 1; }
done
echo "== comparison =="
ddpmlab compare smoke-base smoke-T100 --out reports/compare
echo "== regression gate =="
ddpmlab gate smoke-base

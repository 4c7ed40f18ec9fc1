#!/usr/bin/env bash
# The CI smoke experiment pair: the default params with small overrides, and the same with another T.
# Prints `dvc exp show --md`, renders `dvc plots diff` of the pair, writes reports/compare/compare.md, and runs
# the regression gate.
# Usage: bash ci/smoke.sh            (expects scripts/env.sh to have put .venv on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."

# small: 48 images at 16x16, a tiny U-Net, 40 epochs (120 steps: enough to learn, so a regression shows);
# the real download, prepare and Inception path
SMOKE=(-S 'data.pypi.id_range=[1,48]' -S prepare.image_size=16 -S model.ch=16 -S 'model.ch_mult=[1,2]'
       -S 'model.attn_resolutions=[8]' -S train.epochs=40 -S train.lr=0.001 -S train.val_every=10 -S train.checkpoint_every=20
       -S train.warmup_steps=10 -S 'schedule.compare_T=[100,200]' -S 'schedule.forward_t=[0,50,199]'
       -S residuals.n_t=5 -S residuals.draws_per_t=8 -S sample.n_samples=16 -S sample.steps=20
       -S sweep.n_samples=8 -S 'sweep.steps=[5,20]' -S 'sweep.etas=[0.0]' -S evaluate.kid_subset_size=8 -S evaluate.kid_subsets=20)

dvc exp remove smoke-base smoke-T100 >/dev/null 2>&1 || true
dvc exp run -n smoke-base "${SMOKE[@]}" -S T=200
dvc exp run -n smoke-T100 "${SMOKE[@]}" -S T=100
echo "== dvc exp show =="
dvc exp show --md --no-pager --only-changed
echo "== dvc plots diff (both runs' figures side by side: reports/compare/plots/index.html) =="
dvc plots diff smoke-base smoke-T100 -o reports/compare/plots
for rev in smoke-base smoke-T100; do
    grep -q "static/${rev}_reports_sample_grid.png" reports/compare/plots/index.html \
        || { echo "smoke: dvc plots diff shows no sample grid of $rev" >&2; exit 1; }
done
echo "== comparison =="
python -m ddpmlab.tools.compare smoke-base smoke-T100 --out reports/compare
echo "== regression gate =="
python -m ddpmlab.tools.gate smoke-base

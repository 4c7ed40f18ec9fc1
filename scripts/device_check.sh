#!/usr/bin/env bash
# The checks on a lent GPU machine (the device tool): the CUDA tests, the benchmark (eager and compiled,
# side by side with diffusers) and the GPU preset through `dvc exp run ... sample`, inside one time budget.
# Phases as arguments (default: bench, pipeline, tests), run in that order: the compiled benchmark (with the eager
# forward variants; "eager" adds the slow eager benchmark), the preset sized to the time left, then the CUDA tests with
# what remains. Measured on an H100 (2026-11-26): setup 18 s, compiled benchmark 199 s (limit 260), preset pipeline 257 s (500
# epochs), CUDA tests 208 s with a cold compile cache: more than one 10-minute call, so the tests got a second call
# on the warm machine (it stays warm 30 s and keeps /tmp: the wheels and torch.compile's cache):
#
#   run(command="BUDGET=575 bash scripts/device_check.sh bench pipeline tests", carry=[".whl", ".gpu"], timeout_s=600)
#   run(command="BUDGET=255 bash scripts/device_check.sh tests", carry=[".whl"], timeout_s=270)
#
# Expects beside the tree: .whl/ (Python 3.12 wheels of what the machine lacks: `bash scripts/device_wheels.sh`
# fetches them), .gpu/pokemon/ (the 1,008 artworks of the pokemon==0.36 sdist, for a folder source: the machine
# reaches no registry; device_wheels.sh extracts them too) and $OUT. At most 8 files come back: all phases
# write 8. Everything is logged under $OUT as it happens,
# so a call killed at its limit still brings back what ran. The preset's epoch count is sized from the
# compiled benchmark's img/s and the time left (recorded in params.yaml inside pipeline.tgz).
set -uo pipefail
: "${OUT:?set OUT to a folder for the results}"
BUDGET=${BUDGET:-580}  # seconds for the whole script
PHASES=" ${*:-tests bench pipeline} "
want() { [[ $PHASES == *" $1 "* ]]; }
T0=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - T0))); }
exec 3>&1 >>"$OUT/log.txt" 2>&1
step() { echo "== $(date +%T) +$(($(date +%s) - T0))s $*"; }
stamp() { while IFS= read -r line; do printf '%(%T)T %s\n' -1 "$line"; done; }

step "setup"
if [ -d /tmp/site/dvc ]; then echo "wheels already installed (warm machine)"; else
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || { echo "wheels failed"; exit 1; }
fi
# a .pth file puts the carried packages behind the machine's own for every python3, whatever PYTHONPATH says
SITE=$(python3 -c 'import site; print(site.getsitepackages()[0])')
echo /tmp/site >"$SITE/zz_carried.pth" || export PYTHONPATH=/tmp/site
# `python` for the stages' commands; `dvc` (its console script is not on PATH under --target)
mkdir -p /tmp/bin && printf '#!/bin/sh\nexec python3 "$@"\n' >/tmp/bin/python && printf '#!/bin/sh\nexec python3 -m dvc "$@"\n' >/tmp/bin/dvc \
  && chmod +x /tmp/bin/python /tmp/bin/dvc
export PATH=/tmp/bin:$PATH DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
if [ -d .gpu/pokemon ]; then rm -rf /tmp/pokemon && mv .gpu/pokemon /tmp/pokemon; fi; rm -rf .whl .gpu
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
python3 -c "import torch, dvc, dvclive, pydantic, diffusers, hydra; print('torch', torch.__version__, torch.cuda.get_device_name(), 'dvc', dvc.__version__, 'diffusers', diffusers.__version__)" || exit 1
nproc; git --version
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}

if want eager; then  # the eager benchmark with diffusers and every variant (slow: cuDNN autotunes each new shape)
step "bench eager"
timeout -k 5 150 python3 -m ddpmlab.bench --preset cifar10 --variants --json "$OUT/bench_eager.json" >"$OUT/bench_eager.txt" 2>&1
echo "bench eager exit $?"
fi

if want bench; then  # compiled: the targets' rows, diffusers fp32/bf16, and the eager forward in each precision/layout
step "bench compile"
timeout -k 5 260 python3 -m ddpmlab.bench --preset cifar10 --compile --variants --json "$OUT/bench_compile.json" >"$OUT/bench_compile.txt" 2>&1
BC=$?; echo "bench compile exit $BC"; cp "$OUT/bench_compile.json" /tmp/ 2>/dev/null
fi

if want pipeline; then
step "pipeline"
COMPILE=true; RATE_FILE="$OUT/bench_compile.json"
if [ ! -s "$RATE_FILE" ]; then RATE_FILE=/tmp/bench_compile.json; fi  # an earlier call's, on a warm machine
if [ "${BC:-0}" != 0 ] || [ ! -s "$RATE_FILE" ]; then COMPILE=false; RATE_FILE="$OUT/bench_eager.json"; fi
PIPE_S=$(($(left) - 25))
# epochs from the measured training img/s: 896 images per epoch, ~75 s of the budget outside the training
# loop (dvc, data, schedule, compile from the cache the benchmark filled, sampling); the loop ran at 0.75x the
# benchmark's step rate on an H200 (7 steps per epoch, one host sync each), so count 0.7 of it
EPOCHS=$(python3 - "$RATE_FILE" "$PIPE_S" <<'EOF'
import json, sys
try:
    rate = json.load(open(sys.argv[1]))["rows"][0]["img_per_s"]
except Exception:
    rate = 1500.0
print(max(50, min(500, int((int(sys.argv[2]) - 75) * rate * 0.7 / 896))))
EOF
)
echo "pipeline: compile=$COMPILE epochs=$EPOCHS within ${PIPE_S}s"
if [ "$PIPE_S" -lt 90 ]; then echo "pipeline: skipped, only ${PIPE_S}s left (timeout 0 would mean no limit)"; else
if ! git rev-parse --git-dir >/dev/null 2>&1; then
  if command -v git >/dev/null; then
    git init -q && git add -A && git -c user.name=device -c user.email=device@localhost commit -qm "device copy"
  else  # no git binary: dulwich (a dvc dependency) makes the repository
    python3 -c "from dulwich import porcelain as p; r = p.init('.'); p.add(r); p.commit(r, message=b'device copy', author=b'device <d@localhost>', committer=b'device <d@localhost>')"
  fi || echo "git init failed"
fi
timeout -k 10 "$PIPE_S" bash scripts/gpu_preset.sh -S data.source=folder -S data.folder=/tmp/pokemon -S train.compile=$COMPILE \
  -S train.epochs="$EPOCHS" sample 2>&1 | stamp >"$OUT/pipeline.txt"
echo "pipeline exit ${PIPESTATUS[0]}"
fi

step "collect"
dvc exp show --md >reports/exp_show.md 2>&1
tar czf "$OUT/pipeline.tgz" params.yaml dvc.lock reports/exp_show.md reports/train reports/sample reports/schedule reports/prepare \
  samples/samples.npz samples/sampling.json data/prepared 2>/dev/null
ls -la "$OUT"
fi

if want tests; then  # last: they take what is left of the budget (151 s on an H200 with a cold compile cache)
T_S=$(( $(left) - 10 )); [ "$T_S" -gt 240 ] && T_S=240
step "cuda tests (${T_S}s)"
if [ "$T_S" -lt 30 ]; then echo "cuda tests: skipped, only ${T_S}s left"; else
timeout -k 5 "$T_S" python3 -m pytest -m cuda tests/test_cuda.py -q -ra --durations=5 -p no:cacheprovider >"$OUT/cuda_tests.txt" 2>&1
echo "cuda tests exit $?"; tail -5 "$OUT/cuda_tests.txt"
fi
fi
step "done"
# the reply shows the end of stdout: the log, the benchmark tables, the tests' summary, the pipeline's stage lines
{ cat "$OUT/log.txt"; for f in "$OUT"/bench_*.txt; do [ -e "$f" ] || continue; echo "-- $f"; sed -n '/^device:/p;/^variant/,$p' "$f"; done
  tail -4 "$OUT/cuda_tests.txt" 2>/dev/null; grep -a "Running stage\|torch.compile\|ERROR\|Ran experiment\|^[0-9:]* train:\|sample:" "$OUT/pipeline.txt" 2>/dev/null | cut -c1-300; } >&3

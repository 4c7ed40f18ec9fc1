#!/usr/bin/env bash
# Checks of the GPU layer on a machine with an NVIDIA GPU: the benchmark, the GPU preset up to the samples and the
# CUDA tests, each logged with timestamps. See docs/experiments.md, "GPU preset", for the figures measured on an H100 and an H200.
#
#   bash scripts/gpu_check.sh LOGDIR [phases...]     # phases default to: bench preset tests
#   bash scripts/gpu_check.sh logs tests             # only the CUDA tests
#
# Phases, run in the order given:
#   bench    python -m ddpmlab.tools.bench --preset cifar10 --compile --variants --json LOGDIR/bench.json
#            the compiled training step of the DDPM CIFAR-10 network (35.7M params) beside a plain fp32 reference and
#            diffusers' UNet2DModel, and the denoiser's forward in each precision and layout (a few minutes)
#   preset   bash scripts/gpu_preset.sh sample
#            the GPU preset as one `dvc exp run`, up to the samples (needs no Inception weights; downloads the
#            artworks like the default pipeline). Like any `dvc exp run`, it leaves the experiment's params in the
#            workspace's params.yaml and its outputs in the workspace.
#   tests    python -m pytest -m cuda tests/test_cuda.py
#            the CUDA tests: bf16 + channels_last training eager and compiled, compiled sampling, SIGKILL resume
#
# Sets up or reuses the pinned environment first (`source scripts/env.sh`: .venv from requirements.lock), then prints
# the GPU (nvidia-smi), the versions and the commit, also kept in LOGDIR/system.log (and `pip freeze` in
# LOGDIR/pip_freeze.txt). Every phase writes LOGDIR/<phase>.log, each line prefixed with the time it was printed.
# A failed phase does not stop the later ones. Exit status: 0 when every phase passed, 1 when any failed (or the CUDA
# tests were skipped), 2 on a usage error, 3 when no CUDA device is visible (then no phase runs).
set -uo pipefail

PHASES_ALL="bench preset tests"
usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then usage; [[ $# -ge 1 ]] && exit 0 || exit 2; fi
if [[ $1 == -* ]]; then echo "error: LOGDIR comes first, got '$1' (see --help)" >&2; exit 2; fi
mkdir -p "$1" || exit 2
LOGDIR=$(cd "$1" && pwd)  # absolute: env.sh changes into the repository
shift
PHASES=("$@")
[[ ${#PHASES[@]} -eq 0 ]] && read -r -a PHASES <<<"$PHASES_ALL"
for p in "${PHASES[@]}"; do
  [[ " $PHASES_ALL " == *" $p "* ]] || { echo "error: unknown phase '$p' (phases: $PHASES_ALL)" >&2; exit 2; }
done

# the pinned environment; env.sh also sets -euo pipefail, but here a failed phase must not end the script
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
set +e
export PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1

# every line of stdin, prefixed with the time it arrived; of a progress bar's carriage-return updates the last is kept
stamp() {
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    printf '%(%F %T)T %s\n' -1 "${line##*$'\r'}"
  done
}

# ---- the machine, first ------------------------------------------------------------------------------------
{
  echo "== $(date '+%F %T %Z') gpu_check: phases ${PHASES[*]}; logs in $LOGDIR"
  echo "-- host: $(uname -n), $(nproc) CPU cores, $(uname -sr)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
      --format=csv || echo "nvidia-smi failed (exit $?)"
  else
    echo "nvidia-smi: not found (no NVIDIA driver installed?)"
  fi
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"
  python - <<'EOF'
import platform
from importlib.metadata import PackageNotFoundError, version

import torch

print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA build", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
versions = []
for name in ("ddpmlab", "dvc", "dvclive", "diffusers", "torch-fidelity", "pydantic", "numpy", "triton"):
    try:
        versions.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        versions.append(f"{name} -")
print(" | ".join(versions))
EOF
  echo "-- $(git --version 2>/dev/null || echo 'git: not found'); commit $(git describe --always --dirty 2>/dev/null || echo '?')"
} 2>&1 | tee "$LOGDIR/system.log"
python -m pip freeze --all >"$LOGDIR/pip_freeze.txt" 2>&1

if ! python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  {
    echo
    echo "NO CUDA DEVICE VISIBLE: torch.cuda.is_available() is False, so no phase was run."
    echo "  The benchmark and the preset would run on the CPU (hours) and the CUDA tests would only be skipped."
    echo "  Check nvidia-smi above (driver), CUDA_VISIBLE_DEVICES, and that torch is a CUDA build (\"CUDA build\" above)."
  } | tee -a "$LOGDIR/system.log" >&2
  exit 3
fi

# ---- the phases ----------------------------------------------------------------------------------------------
declare -A STATUS SECONDS_TAKEN
run_phase() {
  local phase=$1 log="$LOGDIR/$1.log" t0 rc
  local -a cmd
  case $phase in
    bench) cmd=(python -m ddpmlab.tools.bench --preset cifar10 --compile --variants --json "$LOGDIR/bench.json") ;;
    preset) cmd=(bash scripts/gpu_preset.sh sample) ;;
    tests) cmd=(python -m pytest -m cuda tests/test_cuda.py --durations=5) ;;
  esac
  t0=$(date +%s)
  echo "== $(date '+%F %T') $phase: ${cmd[*]}  (log: $log)"
  {
    echo "== $(date '+%F %T %Z') $phase: ${cmd[*]}"
    echo "== in $PWD, commit $(git describe --always --dirty 2>/dev/null || echo '?')"
  } >"$log"
  "${cmd[@]}" 2>&1 </dev/null | stamp >>"$log"
  rc=${PIPESTATUS[0]}
  SECONDS_TAKEN[$phase]=$(($(date +%s) - t0))
  if [[ $phase == tests && $rc == 0 ]] && grep -qE '[0-9]+ skipped' "$log"; then
    echo "$(date '+%F %T') gpu_check: CUDA tests were skipped: counted as a failure" >>"$log"
    rc=1
  fi
  echo "== $(date '+%F %T') $phase: exit $rc after ${SECONDS_TAKEN[$phase]} s" >>"$log"
  if [[ $rc == 0 ]]; then
    STATUS[$phase]=passed
    tail -n 3 "$log" | sed 's/^/   /'
  else
    STATUS[$phase]="FAILED (exit $rc)"
    echo "   $phase FAILED (exit $rc); the end of $log:"
    tail -n 20 "$log" | sed 's/^/   | /'
  fi
}

for phase in "${PHASES[@]}"; do run_phase "$phase"; done

FAILED=0
{
  echo
  echo "== $(date '+%F %T') gpu_check summary (logs in $LOGDIR)"
  for phase in "${PHASES[@]}"; do
    printf '   %-7s %-18s %5s s\n' "$phase" "${STATUS[$phase]}" "${SECONDS_TAKEN[$phase]}"
  done
} | tee -a "$LOGDIR/system.log"
for phase in "${PHASES[@]}"; do [[ ${STATUS[$phase]} == passed ]] || FAILED=1; done
exit $FAILED

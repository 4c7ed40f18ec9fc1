#!/usr/bin/env bash
# The GPU preset (presets/gpu.yaml: Ho et al.'s CIFAR-10 U-Net on all 1,008 artworks at 32 px, bf16 +
# torch.compile) as one `dvc exp run` named "gpu", in the pinned environment (set up on first use).
#
#   bash scripts/gpu_preset.sh                        # the whole pipeline (needs the Inception weights)
#   bash scripts/gpu_preset.sh sample                 # up to the samples (what a GPU machine without them can do)
#   bash scripts/gpu_preset.sh -S data.source=folder -S data.folder=/data/pokemon sample   # images from a folder
#   bash scripts/gpu_preset.sh -n gpu-2000 -S train.epochs=2000                            # another name, longer
# Extra arguments go to `dvc exp run` after the preset's (a later -S wins). The preset itself is a params file
# to read and copy: presets/gpu.yaml.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# the device check: without a GPU this is hours of CPU training, so stop before dvc starts (one line, exit 2)
if ! python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo "gpu_preset: no CUDA GPU is visible here (torch $(python -c 'import torch; print(torch.__version__)')); run it on an NVIDIA GPU machine, or \`ddpmlab preset presets/gpu.yaml\` to run the preset here anyway" >&2
    exit 2
fi
exec python -m ddpmlab.tools.preset presets/gpu.yaml "$@"

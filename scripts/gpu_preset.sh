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
exec python -m ddpmlab.tools.preset presets/gpu.yaml "$@"

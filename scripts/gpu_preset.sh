#!/usr/bin/env bash
# The GPU preset as one `dvc exp run`: Ho et al.'s CIFAR-10 U-Net (35.7M params: ch 128, mult 1-2-2-2,
# 2 residual blocks, attention at 16x16, dropout 0.1) on all 1,008 artworks at 32 px, batch 128, bf16 +
# torch.compile, 512 samples. val_fraction 0.111 holds out 112 images and leaves 896 = 7 batches of 128,
# so the compiled step keeps one shape (a last short batch would compile a second graph).
# 500 epochs = 3,500 steps: a few minutes on one H100 (README, "GPU preset"); raise train.epochs for more.
# Sampling without autoguidance (sample.guidance=1), as measured on the H100; the run still keeps its early EMA
# (train.guide_fraction), so `-S sample.guidance=2.5` tries it without retraining (not measured on a GPU).
#
#   bash scripts/gpu_preset.sh                        # the whole pipeline (needs the Inception weights)
#   bash scripts/gpu_preset.sh sample                 # up to the samples (what a GPU machine without them can do)
#   bash scripts/gpu_preset.sh -S data.source=folder -S data.folder=/data/pokemon sample   # images from a folder
# Extra arguments go to `dvc exp run` after the preset's (a later -S wins); GPU_PRESET_NAME names the experiment.
set -euo pipefail
exec dvc exp run -n "${GPU_PRESET_NAME:-gpu-preset}" \
  -S 'data.pypi.id_range=[]' -S prepare.image_size=32 -S prepare.val_fraction=0.111 \
  -S model.ch=128 -S 'model.ch_mult=[1,2,2,2]' -S model.num_res_blocks=2 -S 'model.attn_resolutions=[16]' \
  -S model.norm_groups=32 -S model.dropout=0.1 \
  -S train.epochs=500 -S train.batch_size=128 -S train.lr=0.0003 -S train.warmup_steps=200 -S train.ema_decay=0.9995 \
  -S train.compile=true -S train.val_every=25 -S train.checkpoint_every=100 \
  -S sample.n_samples=512 -S sample.batch_size=512 -S sample.guidance=1 -S evaluate.kid_subset_size=100 -S sweep.n_samples=256 \
  "$@"

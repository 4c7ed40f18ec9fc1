"""Stage `sample`: DDPM (Algorithm 2) or DDIM sampling from the EMA weights; image i depends only on (seed, i)."""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ddpmlab.config import SampleConfig, load_params
from ddpmlab.diffusion.sampling import SamplerSpec, sample, sampling_steps
from ddpmlab.errors import ParamError
from ddpmlab.data.images import grid, to_uint8
from ddpmlab.io import write_json
from ddpmlab.device import FastDenoiser, resolve_device
from ddpmlab.training.loop import build_model_from_checkpoint, load_checkpoint

TRAJECTORY_IMAGES = 8


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", required=True, type=Path, help="trained model (train stage)")
    ap.add_argument("--out", required=True, type=Path, help="samples.npz goes here")
    ap.add_argument("--figures", required=True, type=Path, help="grid.png and trajectory.png go here")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = ap.parse_args(argv)
    try:
        cfg = SampleConfig.from_params(load_params(args.params))
    except ParamError as e:
        sys.exit(f"sample: {e}")
    device = resolve_device(args.device)
    model, sched, ckpt = build_model_from_checkpoint(load_checkpoint(args.model), device)
    model = FastDenoiser(model, device, compile=cfg.compile)
    spec = SamplerSpec(cfg.sampler, cfg.steps, cfg.eta, cfg.variance, cfg.spacing)
    shape = (ckpt["model_config"]["in_channels"], ckpt["model_config"]["image_size"], ckpt["model_config"]["image_size"])

    n_steps = len(sampling_steps(spec, sched.T))
    batches = [list(range(i, min(i + cfg.batch_size, cfg.n_samples))) for i in range(0, cfg.n_samples, cfg.batch_size)]
    images, traj = [], None
    t0 = time.perf_counter()
    with tqdm(total=n_steps * len(batches), desc=f"sample {cfg.sampler}", unit="step") as bar:
        for k, idx in enumerate(batches):
            x, tr = sample(model, sched, spec, idx, cfg.seed, shape, device, frames=cfg.trajectory_frames if k == 0 else 0, progress=bar)
            images.append(to_uint8(x))
            traj = tr if k == 0 else traj
    seconds = time.perf_counter() - t0
    images = np.concatenate(images)

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "samples.npz", images=images)
    args.figures.mkdir(parents=True, exist_ok=True)
    scale = max(1, 64 // shape[1])
    grid(images, scale=scale).save(args.figures / "grid.png")
    m = min(TRAJECTORY_IMAGES, len(traj[0]))
    frames = np.stack([to_uint8(f[:m]) for f in traj], axis=1).reshape(-1, *images.shape[1:])  # row = image, column = time
    grid(frames, ncol=len(traj), scale=scale).save(args.figures / "trajectory.png")
    write_json(args.figures / "sampling.json", {"sampler": cfg.sampler, "steps": n_steps, "n_samples": len(images), "seconds": seconds, "img_per_s": len(images) / seconds})
    print(f"sample: {len(images)} images with {cfg.sampler} ({n_steps} steps) in {seconds:.1f} s")


if __name__ == "__main__":
    main()

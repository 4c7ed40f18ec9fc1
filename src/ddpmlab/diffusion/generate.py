"""Generate a set of images from a trained denoiser: batching, progress, trajectory frames.

Image i depends only on (seed, i) (EDM's convention): batch size and device order never change it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ddpmlab.data.images import to_uint8
from ddpmlab.diffusion.sampling import SamplerSpec, sample, sampling_steps
from ddpmlab.diffusion.schedule import Schedule


@dataclass
class Generated:
    images: np.ndarray      # uint8 [N, H, W, C]
    trajectory: list        # frames of the first batch: uint8 [n, H, W, C] each, from x_T to x_0
    steps: int              # denoiser evaluations per image
    seconds: float


def generate(model, sched: Schedule, spec: SamplerSpec, n: int, batch: int, seed: int, shape: tuple, device,
             frames: int = 0, desc: str = "sample") -> Generated:
    """n images of `shape` [C, H, W] in batches of `batch`; the first batch also records `frames` trajectory frames."""
    n_steps = len(sampling_steps(spec, sched.T))
    batches = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
    images, traj = [], []
    t0 = time.perf_counter()
    with tqdm(total=n_steps * len(batches), desc=f"{desc} {spec.sampler}", unit="step") as bar:
        for k, idx in enumerate(batches):
            x, tr = sample(model, sched, spec, idx, seed, shape, device, frames=frames if k == 0 else 0, progress=bar)
            images.append(to_uint8(x))
            if k == 0:
                traj = [to_uint8(f) for f in tr]
    return Generated(np.concatenate(images), traj, n_steps, time.perf_counter() - t0)


def trajectory_rows(traj: list, m: int) -> np.ndarray:
    """Frames [F][n, H, W, C] -> [m*F, H, W, C] with row = image, column = time (for a grid with ncol=F)."""
    m = min(m, len(traj[0]))
    return np.stack([f[:m] for f in traj], axis=1).reshape(-1, *traj[0].shape[1:])


def save_samples(g: Generated, out, figures, traj_images: int = 8) -> dict:
    """samples.npz, the grid, the trajectory strip and its animated GIF; returns the sampling metrics."""
    from pathlib import Path

    from ddpmlab.data.images import grid, save_gif

    out, figures = Path(out), Path(figures)
    out.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "samples.npz", images=g.images)
    scale = max(1, 64 // g.images.shape[1])
    grid(g.images, scale=scale).save(figures / "grid.png")
    grid(trajectory_rows(g.trajectory, traj_images), ncol=len(g.trajectory), scale=scale).save(figures / "trajectory.png")
    # the same frames as an animation: the first images side by side, x_T to x_0, looping
    m = min(traj_images, len(g.trajectory[0]))
    save_gif([grid(f[:m], ncol=min(m, 4), scale=scale) for f in g.trajectory], figures / "trajectory.gif")
    return {"steps": g.steps, "n_samples": len(g.images), "seconds": g.seconds, "img_per_s": len(g.images) / g.seconds}

"""Generate a set of images from a trained denoiser: batching, progress, trajectory frames.

Image i depends only on (seed, i) (EDM's convention): batch size and device order never change it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ddpmlab.core.images import to_uint8
from ddpmlab.core.sampling import SamplerSpec, sample, sampling_steps
from ddpmlab.core.schedule import Schedule


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





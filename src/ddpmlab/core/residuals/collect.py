"""Residuals of a denoiser on held-out images: the input of the chi-squared check (check.py)."""

from __future__ import annotations

import numpy as np
import torch

from ddpmlab.core.residuals import check as R
from ddpmlab.core.schedule import Schedule, q_sample
from ddpmlab.core.streams import Stream, numpy_rng, torch_generator


@torch.no_grad()
def collect_residuals(model, sched: Schedule, val_x: torch.Tensor, n_t: int, draws: int, seed: int, batch: int = 128):
    """r = eps - eps_theta(x_t, t) on every validation image at each t of the grid (check.t_grid), `draws` noises each.

    val_x [N, C, H, W] in [-1, 1]. Every t is shared by N * draws rows, so sigma^2(t) has its own
    estimate at each t. Returns r [M, C, H, W] float32 numpy, t [M] int64 (0-based), the grid t [K]
    and its stratum weights [K]; M = K * draws * N.
    """
    if isinstance(model, torch.nn.Module):
        model.eval()
    device, N = val_x.device, len(val_x)
    tk, w = R.t_grid(sched.T, n_t, numpy_rng(seed, Stream.RESIDUAL_T))
    t_all = torch.from_numpy(np.repeat(tk, N * draws))
    x_idx = torch.arange(N).repeat(len(tk) * draws)
    noise = torch.randn((len(t_all), *val_x.shape[1:]), generator=torch_generator(seed, Stream.RESIDUAL_NOISE))
    rs = []
    for i in range(0, len(t_all), batch):
        t = t_all[i : i + batch].to(device)
        eps = noise[i : i + batch].to(device)
        x_t = q_sample(sched, val_x[x_idx[i : i + batch].to(device)], t, eps)
        rs.append((eps - model(x_t, t).float()).cpu())
    return torch.cat(rs).numpy(), t_all.numpy(), tk, w

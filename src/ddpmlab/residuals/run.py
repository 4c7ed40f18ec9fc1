"""The residuals stage's work: residuals of a model on the validation split, the check, the spike ratio, outputs.

Outputs in `out`: metrics.json (flat, see check.metrics), loss_by_t.csv (sigma^2(t) with its CI),
residuals.npz (r, t, T: the input of `python -m ddpmlab.residuals check`) and the figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ddpmlab.diffusion.sampling import derive_seed
from ddpmlab.diffusion.schedule import Schedule, q_sample
from ddpmlab.io import write_json
from ddpmlab.residuals import check as R


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
    tk, w = R.t_grid(sched.T, n_t, np.random.default_rng(derive_seed(seed, 5)))
    t_all = torch.from_numpy(np.repeat(tk, N * draws))
    x_idx = torch.arange(N).repeat(len(tk) * draws)
    noise = torch.randn((len(t_all), *val_x.shape[1:]), generator=torch.Generator().manual_seed(derive_seed(seed, 6)))
    rs = []
    for i in range(0, len(t_all), batch):
        t = t_all[i : i + batch].to(device)
        eps = noise[i : i + batch].to(device)
        x_t = q_sample(sched, val_x[x_idx[i : i + batch].to(device)], t, eps)
        rs.append((eps - model(x_t, t).float()).cpu())
    return torch.cat(rs).numpy(), t_all.numpy(), tk, w


def run(model, sched: Schedule, val_x: torch.Tensor, history: list, n_train: int, *, n_t: int, draws_per_t: int,
        alpha: float, seed: int, out: Path) -> tuple[R.CheckResult, R.SpikeResult]:
    """Collect, check, write every output of the stage into `out`; returns the two results.

    history: the checkpoint's per-epoch records (train/loss; val/loss and the val/resid_* effect sizes
    where validated)."""
    from ddpmlab.residuals.plots import over_training, plot_all  # matplotlib only where figures are drawn

    train_losses = [h["train/loss"] for h in history]
    val_losses = [h["val/loss"] for h in history if "val/loss" in h]

    r, t, tk, w = collect_residuals(model, sched, val_x, n_t, draws_per_t, seed)
    chi, s2, rows = R.chi_squared_check(r, t, sched.T, alpha, seed=seed)
    widths = np.round(w * sched.T).astype(np.int64)
    spikes = R.spike_check(train_losses, s2, w, chi.D, n_train, alpha, widths)

    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "residuals.npz", r=r, t=t, T=np.int64(sched.T))
    pd.DataFrame({"t": s2.t, "sigma2": s2.sigma2, "ci_lo": s2.lo, "ci_hi": s2.hi, "rows": s2.rows, "weight": w}).to_csv(
        out / "loss_by_t.csv", index=False, float_format="%.6g")
    plot_all(r, t, s2, rows, chi, spikes, train_losses, out, seed=seed)
    m = R.metrics(chi, spikes)
    m["val_loss_epoch_std"] = R.observed_epoch_std(val_losses)[0]
    for k, (first, last, s_first, s_last) in over_training(history, out).items():
        m[f"training_{k}_first"], m[f"training_{k}_last"] = first, last
    write_json(out / "metrics.json", m)
    return chi, spikes

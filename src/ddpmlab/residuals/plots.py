"""Figures of the chi-squared check (kept apart from the statistics so tests need no matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from ddpmlab.reporting import plotting


def plot_all(z, r, t, edges, ms, chi, spikes, train_losses, out: Path, seed: int = 0, n_points: int = 20000) -> None:
    plt = plotting.plt
    rng = np.random.default_rng(seed)
    flat = z.ravel()
    sub = flat if flat.size <= n_points else rng.choice(flat, n_points, replace=False)

    # 1. validation loss by timestep bin
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    mid = (edges[:-1] + edges[1:] + 1) / 2
    ax.step(mid, ms, where="mid")
    ax.plot(mid, ms, "o", ms=3)
    ax.set_yscale("log")
    ax.set_xlabel("timestep t")
    ax.set_ylabel("validation MSE  E|eps - eps_theta|^2 / D")
    ax.set_title("validation loss by timestep")
    ax.grid(alpha=0.3)
    plotting.save(fig, out / "loss_by_t.png")

    # 2. QQ plots: elementwise z^2 vs chi2(1), per-image S/D vs chi2(D)/D
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    q = np.linspace(0.5 / len(sub), 1 - 0.5 / len(sub), len(sub))
    axes[0].plot(stats.chi2(1).ppf(q), np.sort(np.square(sub)), ".", ms=2)
    lim = stats.chi2(1).ppf(q[-1])
    axes[0].plot([0, lim], [0, lim], "k--", lw=0.8)
    axes[0].set_xlabel("chi-squared(1) quantile")
    axes[0].set_ylabel("z^2 quantile")
    axes[0].set_title(f"elementwise: KS {chi.ks:.3f}")
    S = np.square(z).sum(1) / chi.D
    qs = np.linspace(0.5 / len(S), 1 - 0.5 / len(S), len(S))
    ref = stats.chi2(chi.D).ppf(qs) / chi.D
    axes[1].plot(ref, np.sort(S), ".", ms=3)
    lo, hi = min(ref.min(), S.min()), max(ref.max(), S.max())
    axes[1].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[1].set_xlabel(f"chi-squared(D)/D quantile, D={chi.D}")
    axes[1].set_ylabel("sum(z^2)/D per image")
    axes[1].set_title(f"per image: dispersion var(S)/2D = {chi.dispersion_ratio:.2f}")
    plotting.save(fig, out / "qq.png")

    # 3. histograms against the densities
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    x2 = np.square(sub)
    bins = np.linspace(0, max(10.0, np.quantile(x2, 0.999)), 80)
    axes[0].hist(x2, bins=bins, density=True, alpha=0.6, label="z^2")
    xs = np.linspace(bins[1] / 2, bins[-1], 400)
    axes[0].plot(xs, stats.chi2(1).pdf(xs), "k", lw=1, label="chi-squared(1)")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].set_title("z^2 against chi-squared(1)")
    zb = np.linspace(-6, 6, 121)
    axes[1].hist(sub, bins=zb, density=True, alpha=0.6, label="z")
    axes[1].plot(zb, stats.norm.pdf(zb), "k", lw=1, label="N(0, 1)")
    axes[1].set_yscale("log")
    axes[1].legend()
    axes[1].set_title(f"z: excess kurtosis {chi.excess_kurtosis:.2f}")
    plotting.save(fig, out / "hist.png")

    # 4. the loss spikes against the band sampling noise predicts
    fig, ax = plt.subplots(figsize=(6, 3.8))
    y = np.asarray(train_losses)
    e = np.arange(1, len(y) + 1)
    ax.plot(e, y, lw=1, label="train loss per epoch")
    if len(y) >= 5 and np.isfinite(spikes.predicted_std):
        k = max(3, len(y) // 20)
        smooth = np.convolve(np.pad(y, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, mode="valid")
        ax.fill_between(e, smooth - 2 * spikes.predicted_std, smooth + 2 * spikes.predicted_std, alpha=0.3, color="C1", label="±2σ chi-squared sampling noise")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(f"loss spikes: observed/predicted spread = {spikes.ratio:.2f}")
    ax.legend(fontsize=8)
    plotting.save(fig, out / "spikes.png")

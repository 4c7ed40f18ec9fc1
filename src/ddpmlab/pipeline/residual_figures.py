"""Figures of the chi-squared check (kept apart from the statistics so tests need no matplotlib).

loss_by_t.png  sigma^2(t) at each t of the grid with its 95% CI
qq.png         QQ plot and log-density of z = r / sigma_hat(t) against N(0, 1); top- vs bottom-half scale per image
autocorr.png   autocorrelation of r inside an image by lag (dy, dx), channel correlations, the statistics by t
spikes.png     train loss per epoch against the band chi-squared sampling noise predicts
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from ddpmlab.core.residuals import check as R
from ddpmlab.core.streams import Stream, numpy_rng
from ddpmlab.pipeline import figures as plotting

MAX_LAG = 3


def lag_correlations(r: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """Mean over rows of sum r[y, x] r[y+dy, x+dx] / sum r^2 (per row, overlapping part): [2L+1, 2L+1] for dy, dx in -L..L."""
    x = r.astype(np.float64)
    ms = np.square(x).mean((1, 2, 3))
    H, W = x.shape[2:]
    L = min(max_lag, H - 1, W - 1)
    out = np.zeros((2 * L + 1, 2 * L + 1))
    for dy in range(-L, L + 1):
        for dx in range(-L, L + 1):
            a = x[:, :, max(0, -dy) : H - max(0, dy), max(0, -dx) : W - max(0, dx)]
            b = x[:, :, max(0, dy) : H + min(0, dy), max(0, dx) : W + min(0, dx)]
            out[dy + L, dx + L] = np.mean((a * b).mean((1, 2, 3)) / ms)
    return out


def channel_correlations(r: np.ndarray) -> np.ndarray:
    """[C, C]: mean over rows of sum r_c r_c' / sqrt(sum r_c^2 sum r_c'^2) at the same pixel."""
    x = r.astype(np.float64).reshape(r.shape[0], r.shape[1], -1)
    num = np.einsum("mcd,med->mce", x, x)
    d = np.sqrt(np.einsum("mcc->mc", num))
    return (num / (d[:, :, None] * d[:, None, :])).mean(0)


def plot_all(r, t, s2: R.Sigma2, rows: dict, chi: R.CheckResult, spikes: R.SpikeResult, train_losses, out: Path,
             seed: int = 0, n_points: int = 200_000, max_rows: int = 600) -> None:
    """r [M, C, H, W] residuals at t [M]; s2 and rows from check.chi_squared_check."""
    plt = plotting.plt
    rng = numpy_rng(seed, Stream.RESIDUAL_FIGURE)
    z = R.standardise(r, t, s2).reshape(-1)
    step = -(-z.size // n_points)
    sub = z[int(rng.integers(step)) :: step]  # every step-th element: spread over all rows

    # 1. sigma^2(t) with its estimate
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.errorbar(s2.t, s2.sigma2, yerr=[s2.sigma2 - s2.lo, s2.hi - s2.sigma2], fmt="o-", ms=3, lw=0.8, capsize=2)
    ax.set_yscale("log")
    ax.set_xlabel("timestep t (0-based)")
    ax.set_ylabel("sigma^2(t) = E r^2  (validation MSE)")
    ax.set_title(f"sigma^2(t): {len(s2.t)} t values, {int(s2.rows.min())}+ rows each, 95% CI")
    ax.grid(alpha=0.3)
    plotting.save(fig, out / "loss_by_t.png")

    # 2. QQ of z (all elements, at quantiles reaching 1/(2N) into both tails), log-density of z, top vs bottom half
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    zs = np.sort(z)
    tail = np.logspace(np.log10(0.5 / zs.size), np.log10(0.02), 60)
    probs = np.concatenate([tail, np.linspace(0.02, 0.98, 97)[1:-1], 1 - tail[::-1]])
    ref = stats.norm.ppf(probs)
    axes[0].plot(ref, zs[np.minimum((probs * zs.size).astype(np.int64), zs.size - 1)], ".", ms=3)
    axes[0].plot(ref[[0, -1]], ref[[0, -1]], "k--", lw=0.8)
    axes[0].set_xlabel("N(0, 1) quantile")
    axes[0].set_ylabel("z = r / sigma_hat(t) quantile")
    axes[0].set_title(f"QQ, {zs.size:,} elements: excess kurtosis {chi.kurtosis:.3g}")
    zb = np.linspace(-6, 6, 121)
    axes[1].hist(sub, bins=zb, density=True, histtype="step", lw=1.2, label=f"z ({len(sub):,} elements)")
    axes[1].plot(zb, stats.norm.pdf(zb), "k", lw=0.8, label="N(0, 1)")
    axes[1].set_yscale("log")
    axes[1].set_ylim(0.3 / len(sub) / (zb[1] - zb[0]), 1)
    axes[1].legend(fontsize=8)
    axes[1].set_title("density of z")
    _, inv = np.unique(t, return_inverse=True)
    centre = lambda a: a - (np.bincount(inv, a) / np.bincount(inv))[inv]  # noqa: E731
    axes[2].plot(centre(rows["log_top"]), centre(rows["log_bottom"]), ".", ms=3)
    axes[2].set_xlabel("log mean r^2, top half (centred within t)")
    axes[2].set_ylabel("bottom half")
    axes[2].set_title(f"scale per image: sd of log scale {100 * chi.scale:.2g}%")
    plotting.save(fig, out / "qq.png")

    # 3. autocorrelation inside an image, across channels, and the row statistics by t
    few = r[rng.choice(len(r), max_rows, replace=False)] if len(r) > max_rows else r
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    lag = lag_correlations(few)
    L = (lag.shape[0] - 1) // 2
    shown = lag.copy()
    shown[L, L] = np.nan  # lag 0 is 1 by definition
    im = axes[0].imshow(shown, cmap="RdBu_r", vmin=-max(0.05, np.nanmax(np.abs(shown))), vmax=max(0.05, np.nanmax(np.abs(shown))),
                        extent=[-L - 0.5, L + 0.5, L + 0.5, -L - 0.5])
    for (i, j), v in np.ndenumerate(lag):
        if (i, j) != (L, L):
            axes[0].text(j - L, i - L, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    axes[0].set_xlabel("dx (px)")
    axes[0].set_ylabel("dy (px)")
    axes[0].set_title(f"autocorrelation by lag: rho_h {chi.rho_h:+.3f}, rho_v {chi.rho_v:+.3f}", fontsize=10)
    if r.shape[1] > 1:
        cc = channel_correlations(few)
        im = axes[1].imshow(cc - np.eye(len(cc)), cmap="RdBu_r", vmin=-max(0.05, np.abs(cc - np.eye(len(cc))).max()),
                            vmax=max(0.05, np.abs(cc - np.eye(len(cc))).max()))
        for (i, j), v in np.ndenumerate(cc):
            axes[1].text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
        fig.colorbar(im, ax=axes[1], shrink=0.8)
        axes[1].set_title(f"channel correlation (rho_c {chi.rho_c:+.3f})")
        axes[1].set_xticks(range(len(cc)))
        axes[1].set_yticks(range(len(cc)))
        axes[1].set_xlabel("channel")
        axes[1].set_ylabel("channel")
    else:
        axes[1].axis("off")
    D = chi.D
    by = lambda a: np.bincount(inv, a) / np.bincount(inv)  # noqa: E731
    axes[2].plot(s2.t, by(rows["rho_h"]), "o-", ms=3, label="rho_h")
    axes[2].plot(s2.t, by(rows["rho_v"]), "s-", ms=3, label="rho_v")
    if r.shape[1] > 1:
        axes[2].plot(s2.t, by(rows["rho_c"]), "^-", ms=3, label="rho_c")
    axes[2].plot(s2.t, (D + 2) / D * by(rows["b2"]) - 3, "d-", ms=3, label="excess kurtosis")
    axes[2].axhline(0, color="k", lw=0.6)
    axes[2].set_xlabel("timestep t (0-based)")
    axes[2].set_title("statistics by t (conjecture: all 0)")
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3)
    plotting.save(fig, out / "autocorr.png")

    # 4. the loss spikes against the band sampling noise predicts
    fig, ax = plt.subplots(figsize=(6, 3.8))
    y = np.asarray(train_losses, dtype=np.float64)
    e = np.arange(1, len(y) + 1)
    ax.plot(e, y, lw=1, label="train loss per epoch")
    if len(y) >= 5 and np.isfinite(spikes.predicted_std):
        k = max(3, len(y) // 20)
        smooth = np.convolve(np.pad(y, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, mode="valid")
        ax.fill_between(e, smooth - 2 * spikes.predicted_std, smooth + 2 * spikes.predicted_std, alpha=0.3, color="C1",
                        label="±2σ chi-squared sampling noise")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(f"loss spikes: observed/predicted spread = {spikes.ratio:.2f} ± {spikes.ratio_se:.2f}")
    ax.legend(fontsize=8)
    plotting.save(fig, out / "spikes.png")


TRAINING_KEYS = {"excess_kurtosis": "excess kurtosis of z (0)", "rho_h": "lag-1 corr., horizontal (0)",
                 "rho_v": "lag-1 corr., vertical (0)", "rho_c": "corr. across channels (0)"}


def over_training(history: list, out: Path) -> dict:
    """The check's effect sizes at each validation point (logged by the trainer as val/resid_*) against step.

    Returns {key: (first, last)} for the report's sentence; {} when the run logged none.
    """
    series = {k: [(h["step"], h[f"val/resid_{k}"]) for h in history if f"val/resid_{k}" in h] for k in TRAINING_KEYS}
    series = {k: v for k, v in series.items() if v}
    fig, ax = plotting.plt.subplots(figsize=(6, 3.8))
    for k, v in series.items():
        s, y = zip(*v)
        ax.plot(s, y, "o-", ms=3, lw=1, label=TRAINING_KEYS[k])
    ax.axhline(0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("effect size (independent Gaussian: 0)")
    ax.set_title("the residual check over training (EMA weights, fixed validation draws)")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    plotting.save(fig, out / "over_training.png")
    return {k: (v[0][1], v[-1][1], v[0][0], v[-1][0]) for k, v in series.items()}


def loss_curves(history: list, path: str | Path) -> Path:
    """Train loss per epoch and validation loss (EMA and raw weights) where measured."""
    fig, ax = plotting.plt.subplots(figsize=(6, 3.8))
    ax.plot([r["epoch"] + 1 for r in history], [r["train/loss"] for r in history], lw=1, label="train (random t, noise)")
    for key, label in (("val/loss", "validation, EMA weights (fixed t, noise)"), ("val/loss_raw", "validation, raw weights")):
        pts = [(r["epoch"] + 1, r[key]) for r in history if key in r]
        if pts:
            ax.plot(*zip(*pts), "o-", ms=3, lw=1, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE on eps")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return plotting.save(fig, path)

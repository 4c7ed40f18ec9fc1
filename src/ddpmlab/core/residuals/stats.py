"""Per-image (row) summaries of residuals: the estimators the check tests, and the trainer logs.

A module of its own (numpy and scipy only) so the trainer can log a small version of the check at
every validation point without depending on the check's tests and readings: editing those reruns
the residuals stage, not training.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

PROBS = np.array([0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999])  # chi-squared(1) quantiles of the shape test


def row_statistics(r: np.ndarray, chunk: int = 256) -> dict[str, np.ndarray]:
    """Scale-free summaries of each row of r [M, C, H, W]; every entry is [M] except `cdf` [M, len(PROBS)].

    ms     mean square of the row
    b2     mean(u^4) with u = r / sqrt(ms)                       (Gaussian: 3D/(D+2) exactly)
    cdf    fraction of u^2 at or below chi2(1).ppf(PROBS)        (null: Beta(1/2, (D-1)/2) CDF at q/D)
    rho_h, rho_v, rho_c  lag-1 products over ms: horizontal, vertical, channel pairs of one pixel
    log_top, log_bottom  log mean square of rows [0, h) and [H-h, H) with h = H//2 - 1
    """
    M, C, H, W = r.shape
    D, h = C * H * W, H // 2 - 1
    q = stats.chi2(1).ppf(PROBS)
    out = {k: np.empty(M) for k in ("ms", "b2", "rho_h", "rho_v", "rho_c", "log_top", "log_bottom")}
    out["cdf"] = np.empty((M, len(PROBS)))
    dot = lambda a, b: np.einsum("mchw,mchw->m", a, b)  # noqa: E731  (no temporaries, float64 sums)
    for s in range(0, M, chunk):
        x = r[s : s + chunk].astype(np.float64)
        B, sl = len(x), slice(s, s + len(x))
        x2 = x * x
        ms = x2.sum((1, 2, 3)) / D
        out["ms"][sl] = ms
        out["b2"][sl] = dot(x2, x2) / D / ms**2
        flat = x2.reshape(B, D)
        for k, qk in enumerate(q):  # u^2 <= q  <=>  x^2 <= q ms
            out["cdf"][sl, k] = np.count_nonzero(flat <= (qk * ms)[:, None], axis=1) / D
        out["rho_h"][sl] = dot(x[..., 1:], x[..., :-1]) / (C * H * (W - 1)) / ms
        out["rho_v"][sl] = dot(x[..., 1:, :], x[..., :-1, :]) / (C * (H - 1) * W) / ms
        if C > 1:
            pairs = [np.einsum("mhw,mhw->m", x[:, a], x[:, b]) for a in range(C) for b in range(a + 1, C)]
            out["rho_c"][sl] = np.mean(pairs, axis=0) / (H * W) / ms
        else:
            out["rho_c"][sl] = np.nan
        out["log_top"][sl] = np.log(x2[:, :, :h].mean((1, 2, 3)))
        out["log_bottom"][sl] = np.log(x2[:, :, H - h :].mean((1, 2, 3)))
    return out



def training_stats(r: np.ndarray, rows: dict | None = None) -> dict:
    """Effect sizes of residuals r [M, C, H, W] for a training-time log (no tests, no input checks):
    excess kurtosis of z (Gaussian 0), mean lag-1 autocorrelation horizontal / vertical / across
    channels (independent elements 0; channel NaN for one channel)."""
    r = np.asarray(r)
    D = int(np.prod(r.shape[1:]))
    rows = rows if rows is not None else row_statistics(r)
    return {"excess_kurtosis": float((D + 2) / D * rows["b2"].mean() - 3),
            "rho_h": float(rows["rho_h"].mean()), "rho_v": float(rows["rho_v"].mean()),
            "rho_c": float(np.nanmean(rows["rho_c"])) if r.shape[1] > 1 else float("nan")}

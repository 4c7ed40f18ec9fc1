"""Synthetic residuals for calibrating the check: the conjecture itself and the alternatives it must catch.

Each generator returns (r [M, C, H, W] float32, t [M] int64) laid out like the residuals stage:
`n_t` timesteps shared by `n_images * draws` rows each. Randomness is the `rng` argument.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ddpmlab.core.streams import Stream, numpy_rng

# sigma^2(t) curves on t in [0, T), each varying 50x over t (the check must not depend on them)
CURVES = {
    "exp": lambda t, T: 0.02 + 0.98 * np.exp(-t / (0.04 * T)),
    "hyperbolic": lambda t, T: 1.0 / (1.0 + 49.0 * t / T),
    "linear": lambda t, T: 1.0 - 0.98 * t / T,
    "constant": lambda t, T: np.ones_like(t, dtype=np.float64),
}


def t_layout(n_images: int, n_t: int, draws: int, T: int, rng: np.random.Generator) -> np.ndarray:
    """One t per stratum of n_t equal strata of 0..T-1, repeated for every image and draw: [n_t * n_images * draws]."""
    edges = np.linspace(0, T, n_t + 1).astype(np.int64)
    t = edges[:-1] + (rng.random(n_t) * (edges[1:] - edges[:-1])).astype(np.int64)
    return np.repeat(t, n_images * draws)


def residuals(kind: str, rng: np.random.Generator, n_images: int = 15, n_t: int = 40, draws: int = 1, shape=(3, 32, 32),
              T: int = 1000, curve: str = "exp", strength: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Residuals sigma(t) * e with e [M, *shape] from `kind`, each scaled to unit variance:

    null       iid N(0, 1): the conjecture
    t          Student-t with `strength` degrees of freedom (default 5)
    laplace    Laplace
    blur       N(0, 1) blurred in space with a Gaussian kernel of sd `strength` px (default 0.6; wrap-around)
    scale      N(0, 1) times a per-row factor exp(strength * N(0, 1)) (default 0.3: the scale varies by 30%)
    """
    t = t_layout(n_images, n_t, draws, T, rng)
    size = (len(t), *shape)
    if kind == "null":
        e = rng.standard_normal(size, dtype=np.float32)
    elif kind == "t":
        df = strength or 5.0
        e = (rng.standard_t(df, size) * np.sqrt((df - 2) / df)).astype(np.float32) if df > 2 else rng.standard_t(df, size).astype(np.float32)
    elif kind == "laplace":
        e = (rng.laplace(0.0, 1 / np.sqrt(2), size)).astype(np.float32)
    elif kind == "blur":
        g = rng.standard_normal(size, dtype=np.float32)
        e = ndimage.gaussian_filter(g, sigma=(0, 0, strength or 0.6, strength or 0.6), mode="wrap")
        e /= np.float32(np.sqrt(np.mean(np.square(e, dtype=np.float64))))
    elif kind == "scale":
        s = np.exp((strength or 0.3) * rng.standard_normal(len(t)))
        e = rng.standard_normal(size, dtype=np.float32) * s[:, None, None, None].astype(np.float32)
    else:
        raise ValueError(f"unknown kind {kind!r}; one of null, t, laplace, blur, scale")
    sigma = np.sqrt(CURVES[curve](t.astype(np.float64), T)).astype(np.float32)
    return e * sigma[:, None, None, None], t


def rejection_rates(kind: str, n_draws: int, seed: int = 0, alpha: float = 0.01, strength: float | None = None,
                    curves=("exp", "hyperbolic", "linear"), **sizes) -> dict:
    """Fraction of `n_draws` simulated data sets in which each component (and the verdict) rejects; draw i uses
    rng [seed, i] and curve curves[i % len(curves)]. Also returns the raw p-values [n_draws, 6] under "p"."""
    from ddpmlab.core.residuals import check as R

    names = [n for ns in R.COMPONENTS.values() for n in ns]
    fails = {c: 0 for c in R.COMPONENTS} | {"any": 0}
    ps = np.empty((n_draws, len(names)))
    for i in range(n_draws):
        r, t = residuals(kind, numpy_rng(seed, Stream.SIMULATION, i), curve=curves[i % len(curves)], strength=strength, **sizes)
        res = R.chi_squared_check(r, t, sizes.get("T", 1000), alpha)[0]
        for c in R.COMPONENTS:
            fails[c] += not getattr(res, f"{c}_ok")
        fails["any"] += not res.verdict
        ps[i] = [getattr(res, f"{n}_p") for n in names]
    return {k: v / n_draws for k, v in fails.items()} | {"p": ps, "names": names}

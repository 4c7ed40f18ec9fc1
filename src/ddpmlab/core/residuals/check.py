"""The chi-squared check of noise-prediction residuals: one calibrated test per part of the conjecture.

Conjecture: a healthy model's residual r = eps - eps_theta(x_t, t) [C, H, W] has
independent N(0, sigma^2(t)) elements, sigma^2 a function of t alone; then z = r / sigma(t) has
z^2 ~ chi-squared(1) elementwise and the per-sample loss |r|^2 / D ~ sigma^2(t) chi2(D) / D.
It has three parts that can fail separately, each with its own statistic:

  (1) marginal shape   each element is Gaussian.  Per row (one image at one t) u = r / RMS(row):
                       - excess kurtosis of u (tails), t-test over rows against its exact null mean;
                       - CDF of u^2 at 7 quantiles of chi-squared(1) against its exact null
                         (u_j^2 / D ~ Beta(1/2, (D-1)/2)), Hotelling T^2 over rows.
  (2) independence     lag-1 autocorrelation of r inside a row: horizontal, vertical, and across
                       the channels of one pixel; each a t-test over rows (null mean exactly 0).
  (3) one scale per t  rows at the same t share sigma^2(t): the log mean square of the top half
                       and of the bottom half of each row (2 rows apart) are rank-correlated
                       across rows at the same t only if the rows' scales differ. Spearman per t,
                       combined with weights n_t - 1 (null: N(0, 1)), one-sided.

Every statistic is pivotal under the hypothesis: (1) and (2) are ratios within one row, (3) ranks
within one t, so none depends on sigma^2(t) (there is no bin whose spread of sigma^2 leaks into
z) and each p-value comes from a null distribution that is exact or a large-sample limit with
hundreds of independent rows (no hand-set window). Each component is also insensitive to the other
causes: (1) standardises per row (unequal scales do not look like heavy tails) and takes its
standard error from the spread over rows (correlated pixels do not shrink it), (2) is a ratio inside
one row, (3) uses ranks of log means (heavy tails do not look like unequal scales) of two halves
that share no neighbours. The verdict rejects by Holm's step-down over all tests at the family-wise
false-alarm rate alpha. Calibration and power are measured by simulation in
tests/test_residuals_calibration.py.

sigma^2(t) is estimated per distinct t (many rows share each t): the mean of r^2 over its rows.
The loss-spike prediction integrates that estimate over t with the strata weights of the t grid.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

import numpy as np
from scipy import special, stats

from ddpmlab.core.errors import UserError
from ddpmlab.core.residuals.stats import PROBS, row_statistics, training_stats
from ddpmlab.core.streams import Stream, numpy_rng

MIN_ROWS_PER_T = 2  # the scale test compares rows at one t; sigma^2(t) needs a spread for its CI
KS_MAX_ELEMENTS = 200_000  # the descriptive KS distance uses a fixed subsample: stable, bounded cost
COMPONENTS = {"marginal": ("kurtosis", "shape"), "correlation": ("rho_h", "rho_v", "rho_c"), "scale": ("scale",)}
TEST_LABELS = {"kurtosis": "excess kurtosis of u", "shape": "CDF of u^2 vs chi-squared(1) at 7 quantiles (Hotelling)",
               "rho_h": "lag-1 autocorrelation, horizontal", "rho_v": "lag-1 autocorrelation, vertical",
               "rho_c": "correlation across channels", "scale": "sd of log per-image scale at one t (split halves, Spearman)"}


class ResidualInputError(UserError, ValueError):
    """Residual arrays that cannot be checked; str(e) is one line saying what is wrong."""


def from_metrics(cls, metrics: dict, prefix: str):
    """Rebuild a result dataclass from the flat metrics written by `metrics()` (null, i.e. NaN in JSON, back to NaN)."""
    def value(f):
        v = metrics.get(prefix + f.name, f.default) if f.default is not MISSING else metrics[prefix + f.name]
        return float("nan") if v is None else v

    return cls(**{f.name: value(f) for f in fields(cls)})


# ---------------------------------------------------------------------------------------------
# Input and sigma^2(t)


def validate(r, t, T) -> tuple[np.ndarray, np.ndarray, int]:
    """Check residuals r [M, C, H, W] float, t [M] int in 0..T-1; raise ResidualInputError (one line)."""
    r, t = np.asarray(r), np.asarray(t)
    T_ = np.asarray(T)
    if T_.size != 1 or not np.issubdtype(T_.dtype, np.integer) or T_.item() < 1:
        shown = f"an array of shape {T_.shape}" if T_.size != 1 else f"{T_.item()!r} ({T_.dtype})"
        raise ResidualInputError(f"T must be one positive integer (the number of diffusion steps), got {shown}")
    T = int(T_.item())
    if r.ndim != 4 or not np.issubdtype(r.dtype, np.floating):
        raise ResidualInputError(f"r must be a float array [M, C, H, W], got {r.dtype} of shape {r.shape}")
    M, C, H, W = r.shape
    if H < 4 or W < 2:
        raise ResidualInputError(f"images must be at least 4 x 2 pixels (H x W) for the neighbour and half-image statistics, got {H} x {W}")
    if t.shape != (M,) or not np.issubdtype(t.dtype, np.integer):
        raise ResidualInputError(f"t must be an integer array [M] with M = {M} (rows of r), got {t.dtype} of shape {t.shape}")
    if T < 1 or t.min(initial=0) < 0 or t.max(initial=0) >= T:
        raise ResidualInputError(f"t must lie in 0..T-1 (0-based) with T = {T}, got {t.min()}..{t.max()}")
    if not np.all(np.isfinite(r)):
        raise ResidualInputError(f"r has {int(np.sum(~np.isfinite(r)))} NaN or infinite values")
    if np.any(np.all(r.reshape(M, -1) == 0, axis=1)):
        raise ResidualInputError("r has rows that are all zero: a residual must vary to be standardised")
    values, counts = np.unique(t, return_counts=True)
    if counts.min() < MIN_ROWS_PER_T:
        raise ResidualInputError(f"too few rows per t: {int(np.sum(counts < MIN_ROWS_PER_T))} of {len(values)} distinct t have fewer than "
                                 f"{MIN_ROWS_PER_T} rows (e.g. t = {int(values[counts.argmin()])}); give each t to several images")
    if M < 2 * len(PROBS):
        raise ResidualInputError(f"too few rows: {M}; the shape test needs at least {2 * len(PROBS)}")
    return r, t.astype(np.int64), T


@dataclass
class Sigma2:
    """sigma^2(t) at each distinct t: mean of r^2 over its rows and elements, 95% CI from the spread over rows."""

    t: np.ndarray        # [K] distinct timesteps, ascending (0-based)
    sigma2: np.ndarray   # [K]
    lo: np.ndarray       # [K]
    hi: np.ndarray       # [K]
    se: np.ndarray       # [K] standard error of sigma2
    rows: np.ndarray     # [K] rows at each t


def sigma2_by_t(ms: np.ndarray, t: np.ndarray) -> Sigma2:
    """ms: per-row mean squares [M]; t [M]. Rows are independent, so the SE of a mean over rows is sd/sqrt(n)."""
    values, inv, counts = np.unique(t, return_inverse=True, return_counts=True)
    mean = np.bincount(inv, ms) / counts
    var = np.bincount(inv, (ms - mean[inv]) ** 2) / np.maximum(counts - 1, 1)
    se = np.sqrt(var / counts)
    q = stats.t.ppf(0.975, np.maximum(counts - 1, 1))
    return Sigma2(values, mean, mean - q * se, mean + q * se, se, counts)


def standardise(r: np.ndarray, t: np.ndarray, s2: Sigma2) -> np.ndarray:
    """z = r / sigma_hat(t), each row by the estimate at its own t: [M, ...] float32."""
    idx = np.searchsorted(s2.t, t)
    return (r / np.sqrt(s2.sigma2[idx]).reshape(-1, *([1] * (r.ndim - 1)))).astype(np.float32)


def null_cdf(D: int) -> np.ndarray:
    """Exact P(u^2 <= chi2(1).ppf(p)) for u = g / RMS(g) over D iid Gaussians: [len(PROBS)]."""
    return stats.beta(0.5, (D - 1) / 2).cdf(stats.chi2(1).ppf(PROBS) / D)


# ---------------------------------------------------------------------------------------------
# The tests


@dataclass
class TestResult:
    """One statistic: its p-value under the conjecture, an effect size with a 95% CI, and Holm's decision."""

    component: str
    statistic: float
    p: float
    effect: float
    lo: float
    hi: float
    rejected: bool = False
    extra: dict = field(default_factory=dict)  # further numbers a reading needs, flattened as <name>_<key>


def _t_test(a: np.ndarray, null: float, scale: float = 1.0) -> tuple[float, float, float, float, float]:
    """Mean of independent rows a [M] against `null`: (t statistic, two-sided p, effect, lo, hi) with effect = scale*(mean-null)."""
    a = a[np.isfinite(a)]
    n = len(a)
    if n < 2:
        return (float("nan"),) * 5
    m, se = a.mean(), a.std(ddof=1) / np.sqrt(n)
    stat = (m - null) / se if se > 0 else (0.0 if m == null else np.inf * np.sign(m - null))
    p = float(2 * stats.t.sf(abs(stat), n - 1))
    q = stats.t.ppf(0.975, n - 1)
    return float(stat), p, float(scale * (m - null)), float(scale * (m - null - q * se)), float(scale * (m - null + q * se))


def kurtosis_test(b2: np.ndarray, D: int) -> TestResult:
    """Excess kurtosis of u. E[b2] = 3D/(D+2) under the hypothesis, so (D+2)/D * mean(b2) - 3 is unbiased for it."""
    stat, p, eff, lo, hi = _t_test(b2, 3 * D / (D + 2), scale=(D + 2) / D)
    return TestResult("marginal", stat, p, eff, lo, hi)


def shape_test(cdf: np.ndarray, D: int) -> TestResult:
    """Hotelling T^2 of the mean CDF deviations [M, P] from the exact null; effect: the largest deviation (a KS distance at PROBS)."""
    d = cdf - null_cdf(D)
    M, P = d.shape
    mean = d.mean(0)
    S = np.cov(d, rowvar=False)
    t2 = float(M * mean @ np.linalg.pinv(S) @ mean)
    f = (M - P) / (P * (M - 1)) * t2
    p = float(stats.f.sf(f, P, M - P))
    k = int(np.argmax(np.abs(mean)))
    half = stats.t.ppf(0.975, M - 1) * np.sqrt(S[k, k] / M)
    return TestResult("marginal", f, p, float(mean[k]), float(mean[k] - half), float(mean[k] + half))


def correlation_test(rho: np.ndarray) -> TestResult:
    stat, p, eff, lo, hi = _t_test(rho, 0.0)
    return TestResult("correlation", stat, p, eff, lo, hi)


def scale_test(log_top: np.ndarray, log_bottom: np.ndarray, t: np.ndarray) -> TestResult:
    """Rows at one t share a scale. Spearman rho_g of (log_top, log_bottom) per t, Z = sum (n_g-1) rho_g / sqrt(sum (n_g-1)).

    Effect: sd of log per-row scale = sqrt(cov(log_top, log_bottom)) / 2 (pooled within t; a shared
    factor s_i^2 is the only source of covariance between disjoint halves), with a normal-theory CI.
    A shared scale can only make the covariance positive: when its whole 95% interval lies below 0 the data
    contradict that model, and the effect and its interval are NaN rather than a zero-width "0% to 0%";
    extra holds the covariance and its interval, so the reading can say what the data show.
    """
    _, inv, n = np.unique(t, return_inverse=True, return_counts=True)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])

    def ranks(x):  # 1-based rank of x within its t (continuous data: no ties)
        order = np.lexsort((x, inv))
        out = np.empty(len(x))
        out[order] = np.arange(len(x)) - start[inv[order]] + 1
        return out

    d2 = np.bincount(inv, (ranks(log_top) - ranks(log_bottom)) ** 2)
    use = n >= 2
    rho = 1 - 6 * d2[use] / (n[use] * (n[use] ** 2 - 1.0))  # Spearman, per t
    num, den = float(np.sum((n[use] - 1) * rho)), float(np.sum(n[use] - 1))
    if den == 0:
        return TestResult("scale", float("nan"), float("nan"), float("nan"), float("nan"), float("nan"),
                          extra=dict.fromkeys(("cov", "cov_lo", "cov_hi"), float("nan")))
    a = log_top - (np.bincount(inv, log_top) / n)[inv]
    b = log_bottom - (np.bincount(inv, log_bottom) / n)[inv]
    sxy, sxx, syy = a @ b, a @ a, b @ b
    z = num / np.sqrt(den)
    cov, va, vb = sxy / den, sxx / den, syy / den
    se = np.sqrt((va * vb + cov**2) / den)
    extra = {"cov": float(cov), "cov_lo": float(cov - 1.96 * se), "cov_hi": float(cov + 1.96 * se)}
    if extra["cov_hi"] < 0:
        return TestResult("scale", float(z), float(stats.norm.sf(z)), float("nan"), float("nan"), float("nan"), extra=extra)
    sd = lambda c: float(np.sqrt(max(c, 0.0)) / 2)  # noqa: E731
    return TestResult("scale", float(z), float(stats.norm.sf(z)), sd(cov), sd(extra["cov_lo"]), sd(extra["cov_hi"]), extra=extra)


def holm(pvalues: dict[str, float], alpha: float) -> dict[str, bool]:
    """Holm's step-down: family-wise false-alarm rate <= alpha under any dependence. NaN p-values are not tests."""
    names = sorted((k for k, p in pvalues.items() if np.isfinite(p)), key=lambda k: pvalues[k])
    out = {k: False for k in pvalues}
    for j, k in enumerate(names):
        if pvalues[k] > alpha / (len(names) - j):
            break
        out[k] = True
    return out


# ---------------------------------------------------------------------------------------------
# The whole check


@dataclass
class CheckResult:
    """Flat so that it round-trips through metrics.json (see `metrics()` / `from_metrics`)."""

    alpha: float
    n_rows: int
    n_t: int
    rows_per_t_min: int
    D: int
    n_tests: int
    ks: float  # descriptive: KS distance of z^2 from chi2(1), z standardised by sigma_hat(t); not part of the verdict
    kurtosis_stat: float
    kurtosis_p: float
    kurtosis: float
    kurtosis_lo: float
    kurtosis_hi: float
    kurtosis_rejected: bool
    shape_stat: float
    shape_p: float
    shape: float
    shape_lo: float
    shape_hi: float
    shape_rejected: bool
    shape_level: float  # the chi-squared(1) probability level where the CDF deviation is largest
    rho_h_stat: float
    rho_h_p: float
    rho_h: float
    rho_h_lo: float
    rho_h_hi: float
    rho_h_rejected: bool
    rho_v_stat: float
    rho_v_p: float
    rho_v: float
    rho_v_lo: float
    rho_v_hi: float
    rho_v_rejected: bool
    rho_c_stat: float
    rho_c_p: float
    rho_c: float
    rho_c_lo: float
    rho_c_hi: float
    rho_c_rejected: bool
    scale_stat: float
    scale_p: float
    scale: float
    scale_lo: float
    scale_hi: float
    scale_rejected: bool
    marginal_ok: bool
    correlation_ok: bool
    scale_ok: bool
    verdict: bool
    scale_cov: float = float("nan")  # split-half covariance of log scales within t, and its 95% CI
    scale_cov_lo: float = float("nan")
    scale_cov_hi: float = float("nan")

    def test(self, name: str) -> TestResult:
        g = lambda f: getattr(self, f"{name}_{f}")  # noqa: E731
        comp = next(c for c, names in COMPONENTS.items() if name in names)
        return TestResult(comp, g("stat"), g("p"), getattr(self, name), g("lo"), g("hi"), bool(g("rejected")))

    def failed(self) -> list[str]:
        return [c for c in COMPONENTS if not getattr(self, f"{c}_ok")]

    # -- the reading: one sentence per component, then the verdict -----------------------------
    def marginal_reading(self) -> str:
        k, s = self.test("kurtosis"), self.test("shape")
        nums = (f"excess kurtosis {k.effect:.3g} (95% CI {k.lo:.3g} to {k.hi:.3g}; Gaussian 0, Laplace 3, Student-t(5) 6), "
                f"largest CDF deviation of u^2 from chi-squared(1) {s.effect:+.2g} (CI {s.lo:+.2g} to {s.hi:+.2g}) at its {self.shape_level:g} quantile")
        if self.marginal_ok:
            return f"Marginal shape holds (no departure from Gaussian at the family-wise level over {self.n_rows * self.D:,} elements): {nums}"
        tails = "heavier" if k.effect > 0 else "lighter"
        why = f"tails {tails} than Gaussian" if k.rejected else "the distribution of z^2 differs from chi-squared(1)"
        return (f"Marginal shape departs from Gaussian ({why}): {nums}. The optimal denoiser's residual need not be Gaussian, "
                "so this measures how far the errors are from the conjecture, not a defect of the model")

    def correlation_reading(self) -> str:
        parts = [f"{lab} {self.test(n).effect:+.3f} (CI {self.test(n).lo:+.3f} to {self.test(n).hi:+.3f})"
                 for n, lab in (("rho_h", "horizontal"), ("rho_v", "vertical"), ("rho_c", "across channels")) if np.isfinite(self.test(n).effect)]
        nums = "lag-1 autocorrelation " + ", ".join(parts) + " (white noise blurred by a 0.6 px Gaussian kernel: 0.45)"
        if self.correlation_ok:
            return f"Elements are uncorrelated with their neighbours (no correlation at the family-wise level): {nums}"
        which = [lab for n, lab in (("rho_h", "horizontal"), ("rho_v", "vertical"), ("rho_c", "channel")) if getattr(self, f"{n}_rejected")]
        return f"Residual elements are correlated ({', '.join(which)}), so they are not independent: {nums}"

    def scale_reading(self) -> str:
        s = self.test("scale")
        if self.scale_cov_hi < 0:  # what a shared scale cannot produce: say what the data show instead
            return (f"The two halves of an image are anti-correlated in log scale (split-half covariance {self.scale_cov:.3g}, "
                    f"95% CI {self.scale_cov_lo:.3g} to {self.scale_cov_hi:.3g}): a per-image scale shared by the whole image can only "
                    f"make it positive, so that model does not describe these residuals and no sd of per-image scale is reported "
                    f"(the test for unequal scales, p = {s.p:.2g}, has nothing to find)")
        nums = f"sd of log per-image scale {100 * s.effect:.2g}% (CI {100 * s.lo:.2g}% to {100 * s.hi:.2g}%)"
        if self.scale_ok:
            return f"Images at the same t share one residual scale (no difference at the family-wise level, p = {s.p:.2g}): {nums}"
        return f"The residual scale differs between images at the same t, so sigma^2 depends on more than t: {nums}"

    def verdict_reading(self) -> str:
        return (f"consistent with the chi-squared conjecture at a family-wise false-alarm rate of {self.alpha:g} (Holm over {self.n_tests} tests)"
                if self.verdict else
                f"not consistent with the chi-squared conjecture at a family-wise false-alarm rate of {self.alpha:g} "
                f"(Holm over {self.n_tests} tests): {' and '.join(self.failed())} fail")

    def reading(self) -> str:
        """The verdict, then one sentence per component."""
        return f"{self.verdict_reading()}. {self.marginal_reading()}. {self.correlation_reading()}. {self.scale_reading()}"


def ks_distance(z: np.ndarray, seed: int = 0) -> float:
    """KS distance of z^2 from chi-squared(1) on a fixed subsample of about KS_MAX_ELEMENTS (descriptive).

    The subsample is every k-th element from a seeded offset: cheap, and it spreads over all rows.
    """
    flat = z.reshape(-1)
    k = -(-flat.size // KS_MAX_ELEMENTS)
    x = np.sort(np.square(flat[int(numpy_rng(seed, Stream.KS_SUBSAMPLE).integers(k)) :: k].astype(np.float64)))
    cdf = special.erf(np.sqrt(x / 2))  # chi-squared(1) CDF
    n = len(x)
    return float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))


def chi_squared_check(r, t, T, alpha: float = 0.01, rows: dict | None = None, seed: int = 0) -> tuple[CheckResult, Sigma2, dict]:
    """The check on residuals r [M, C, H, W] at 0-based timesteps t [M] (each t shared by >= 2 rows).

    Returns (result, sigma^2(t) estimate, per-row statistics). Raises ResidualInputError on bad input.
    """
    if not 0 < alpha < 1:
        raise ResidualInputError(f"alpha must lie in (0, 1), got {alpha}")
    r, t, T = validate(r, t, T)
    M, C, H, W = r.shape
    D = C * H * W
    rows = rows if rows is not None else row_statistics(r)
    s2 = sigma2_by_t(rows["ms"], t)
    tests = {
        "kurtosis": kurtosis_test(rows["b2"], D),
        "shape": shape_test(rows["cdf"], D),
        "rho_h": correlation_test(rows["rho_h"]),
        "rho_v": correlation_test(rows["rho_v"]),
        "rho_c": correlation_test(rows["rho_c"]),
        "scale": scale_test(rows["log_top"], rows["log_bottom"], t),
    }
    shape_level = float(PROBS[int(np.argmax(np.abs(rows["cdf"].mean(0) - null_cdf(D))))])
    rejected = holm({k: v.p for k, v in tests.items()}, alpha)
    flat = {}
    for k, v in tests.items():
        v.rejected = rejected[k]
        flat.update({f"{k}_stat": v.statistic, f"{k}_p": v.p, k: v.effect, f"{k}_lo": v.lo, f"{k}_hi": v.hi, f"{k}_rejected": v.rejected,
                     **{f"{k}_{e}": x for e, x in v.extra.items()}})
    ok = {f"{c}_ok": not any(rejected[n] for n in names) for c, names in COMPONENTS.items()}
    res = CheckResult(
        alpha=alpha, n_rows=M, n_t=len(s2.t), rows_per_t_min=int(s2.rows.min()), D=D,
        n_tests=int(sum(np.isfinite(v.p) for v in tests.values())), ks=ks_distance(standardise(r, t, s2), seed),
        **flat, shape_level=shape_level, **ok, verdict=all(ok.values()),
    )
    return res, s2, rows


# ---------------------------------------------------------------------------------------------
# The t grid and the loss spikes


def t_grid(T: int, n_t: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One t drawn uniformly in each of n_t strata of 0..T-1 with edges round(T (k/n_t)^2): (t [K], weights [K]).

    Strata are narrow at small t, where sigma^2(t) changes fastest, and E_t[f(t)] for t ~ U{0..T-1}
    is estimated without bias by sum_k w_k f(t_k), w_k = stratum width / T. K <= n_t (empty strata
    of small T merge).
    """
    edges = np.unique(np.round(T * (np.arange(n_t + 1) / n_t) ** 2).astype(np.int64))
    width = np.diff(edges)
    t = edges[:-1] + np.minimum((rng.random(len(width)) * width).astype(np.int64), width - 1)
    return t, width / T


def predicted_epoch_std(sigma2: np.ndarray, weights: np.ndarray, D: int, n: int, se: np.ndarray | None = None,
                        widths: np.ndarray | None = None) -> tuple[float, float]:
    """Std of the mean of n per-sample losses L = sigma^2(t) chi2(D)/D with t ~ U{0..T-1}, and its standard error.

    sigma2 [K] at the grid's t_k with stratum weights [K] (sum 1): E_t[sigma^2] = sum w sigma2,
    E_t[sigma^4] = sum w (sigma2^2 - se^2) (se^2 removes the estimate's own noise), and
        var(L) = E_t[sigma^4] (1 + 2/D) - E_t[sigma^2]^2.
    Its SE combines the noise of each sigma2_k (se) and the draw of t_k inside its stratum, the
    latter estimated from neighbouring strata ((h_{k+1} - h_k)^2 / 2, conservative; 0 for strata of
    width 1) with h the linearisation of var(L) in sigma2_k.
    """
    s2, w = np.asarray(sigma2, np.float64), np.asarray(weights, np.float64) / np.sum(weights)
    se = np.zeros_like(s2) if se is None else np.asarray(se, np.float64)
    e2 = w @ s2
    e4 = w @ (s2**2 - se**2)
    v = e4 * (1 + 2 / D) - e2**2
    h = s2**2 * (1 + 2 / D) - 2 * e2 * s2
    dh = np.diff(h) if len(h) > 1 else np.zeros(1)
    within = np.append(dh**2 / 2, dh[-1] ** 2 / 2)[: len(h)]
    if widths is not None:
        within = np.where(np.asarray(widths) > 1, within, 0.0)
    var_v = np.sum(w**2 * within) + np.sum(w**2 * (2 * s2 * (1 + 2 / D) - 2 * e2) ** 2 * se**2)
    if v <= 0:
        return 0.0, float("nan")
    std = float(np.sqrt(v / n))
    return std, float(std * np.sqrt(var_v) / (2 * v))


def observed_epoch_std(losses, tail: float = 0.5) -> tuple[float, float, int]:
    """Epoch-to-epoch spread of a loss series over its last `tail` fraction, trend removed: (std, its SE, epochs used).

    std(first differences) / sqrt(2): for independent noise x_e around a slowly moving mean this is
    the noise's own std, and the slow descent of training does not inflate it. For m differences of
    iid x with excess kurtosis g, var(s_d^2) / (2 var x)^2 = (3 + g) / m, so the relative SE of the
    std is sqrt((3 + g) / (4 m)); g = 2 x the excess kurtosis of the differences.
    """
    x = np.asarray(losses, dtype=np.float64)
    x = x[int(len(x) * (1 - tail)) :]
    if len(x) < 4:
        return float("nan"), float("nan"), len(x)
    d = np.diff(x)
    s = float(np.std(d, ddof=1) / np.sqrt(2))
    g = max(2 * float(stats.kurtosis(d)), -2.0)
    return s, s * float(np.sqrt((3 + g) / (4 * len(d)))), len(x)


@dataclass
class SpikeResult:
    observed_std: float
    observed_se: float
    predicted_std: float
    predicted_se: float
    ratio: float
    ratio_se: float
    n_per_epoch: int
    epochs_used: int
    alpha: float
    spikes_are_noise: bool

    def reading(self) -> str:
        if not np.isfinite(self.ratio):
            return "too few epochs to measure the epoch-to-epoch spread of the train loss"
        nums = (f"observed/predicted epoch-to-epoch spread of the train loss {self.ratio:.2f} ± {self.ratio_se:.2f} "
                f"(pure chi-squared sampling noise with random t gives 1)")
        if self.spikes_are_noise:
            return f"the loss spikes are consistent with chi-squared sampling noise: {nums}"
        extra = max(0.0, 1 - 1 / self.ratio**2)
        return (f"the train loss moves more between epochs than sampling noise predicts: {nums}; "
                f"about {100 * extra:.0f}% of its epoch-to-epoch variance is something else (e.g. the weights changing)")


def spike_check(train_losses, s2: Sigma2, weights: np.ndarray, D: int, n_per_epoch: int, alpha: float = 0.01,
                widths: np.ndarray | None = None) -> SpikeResult:
    """Observed epoch spread against the one predicted from sigma^2(t) at the grid (weights [K] aligned with s2.t).

    Consistent with noise unless the ratio exceeds 1 by more than the one-sided z_(1-alpha) standard errors.
    """
    obs, obs_se, used = observed_epoch_std(train_losses)
    pred, pred_se = predicted_epoch_std(s2.sigma2, weights, D, n_per_epoch, s2.se, widths)
    ok = pred > 0 and np.isfinite(obs)
    ratio = obs / pred if ok else float("nan")
    ratio_se = ratio * float(np.hypot(obs_se / obs, pred_se / pred)) if ok and obs > 0 else float("nan")
    noise = bool(np.isfinite(ratio) and (ratio - 1) <= stats.norm.ppf(1 - alpha) * ratio_se)
    return SpikeResult(obs, obs_se, pred, pred_se, ratio, ratio_se, n_per_epoch, used, alpha, noise)


def metrics(chi: CheckResult, spikes: SpikeResult | None = None) -> dict:
    out = {f"chi2_{k}": v for k, v in asdict(chi).items()}
    if spikes is not None:
        out.update({f"spike_{k}": v for k, v in asdict(spikes).items()})
    return out


def quick_stats(r: np.ndarray, t: np.ndarray | None = None) -> dict:
    """training_stats (excess kurtosis, lag-1 correlations h/v/channel) plus, when t [M] gives some t to
    >= 2 rows, the sd of log per-image scale: the same estimators as the full check."""
    rows = row_statistics(r)
    out = training_stats(r, rows) | {"scale_sd": float("nan")}
    if t is not None and len(np.unique(t)) < len(t):
        out["scale_sd"] = scale_test(rows["log_top"], rows["log_bottom"], np.asarray(t)).effect
    return out


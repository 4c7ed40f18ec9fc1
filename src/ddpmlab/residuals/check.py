"""The chi-squared check of noise-prediction residuals.

Conjecture (seed report): a healthy model's residuals r = eps - eps_theta(x_t, t) behave like
independent Gaussian noise whose scale depends only on t. Then, after standardising r by the
RMS of its t-bin, z = r / sigma_b:
  * z^2 follows chi-squared(1) elementwise            -> KS distance of z^2 from chi2(1);
  * z has the Gaussian's zero excess kurtosis          -> heavy tails show up here;
  * S = sum(z^2) over an image's D = C*H*W elements follows chi-squared(D), var(S) = 2D
                                                        -> dispersion ratio var(S) / (2D);
    spatially correlated residuals give a ratio far above 1;
  * the per-sample training loss is L = sigma^2(t) * chi2(D) / D with t ~ U{0..T-1}, so the
    epoch-mean train loss over n images has standard deviation
        sqrt( (E_t[sigma^4](1 + 2/D) - E_t[sigma^2]^2) / n );
    the observed epoch-to-epoch spread divided by this is the "loss spike" ratio
    (about 1: spikes are sampling noise; much more: something else moves the loss).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from scipy import stats

from ddpmlab.config import ResidualsConfig
from ddpmlab.diffusion.sampling import derive_seed
from ddpmlab.diffusion.schedule import Schedule, q_sample

KS_MAX_ELEMENTS = 200_000


def from_metrics(cls, metrics: dict, prefix: str):
    """Rebuild a result dataclass from the flat metrics written by `metrics()` (null, i.e. NaN in JSON, back to NaN)."""
    return cls(**{f.name: (float("nan") if metrics[prefix + f.name] is None else metrics[prefix + f.name]) for f in fields(cls)})  # KS on a fixed random subsample: the statistic is stable, the cost bounded


def bin_edges(T: int, n_bins: int) -> np.ndarray:
    """Integer edges of n_bins contiguous t-bins covering 0..T-1: [n_bins + 1]."""
    return np.unique(np.round(np.linspace(0, T, n_bins + 1)).astype(np.int64))


@torch.no_grad()
def collect_residuals(model, sched: Schedule, val_x: torch.Tensor, n_bins: int, draws_per_bin: int, seed: int, batch: int = 128):
    """Residuals on the validation images with t stratified over the whole range.

    Returns t [M] (0-based) and r [M, D] float32 numpy, M = N * bins * draws_per_bin.
    """
    if isinstance(model, torch.nn.Module):
        model.eval()
    device = val_x.device
    edges = bin_edges(sched.T, n_bins)
    g = torch.Generator().manual_seed(derive_seed(seed, 5))
    ts = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        ts.append(torch.randint(int(lo), int(hi), (len(val_x) * draws_per_bin,), generator=g))
    t_all = torch.cat(ts)
    x_idx = torch.arange(len(val_x)).repeat(len(t_all) // len(val_x))
    noise = torch.randn((len(t_all), *val_x.shape[1:]), generator=g)
    rs = []
    for i in range(0, len(t_all), batch):
        t = t_all[i : i + batch].to(device)
        eps = noise[i : i + batch].to(device)
        x_t = q_sample(sched, val_x[x_idx[i : i + batch].to(device)], t, eps)
        rs.append((eps - model(x_t, t).float()).flatten(1).cpu())
    return t_all.numpy(), torch.cat(rs).numpy()


@dataclass
class ChiSquaredResult:
    ks: float
    excess_kurtosis: float
    dispersion_ratio: float
    dispersion_se: float
    D: int
    n_residuals: int
    ks_pass: bool
    kurtosis_pass: bool
    dispersion_pass: bool
    verdict: bool

    def reading(self) -> str:
        """One line for the report."""
        if self.verdict:
            return f"residuals are consistent with chi-squared(1): KS {self.ks:.3f}, excess kurtosis {self.excess_kurtosis:.2f}, dispersion {self.dispersion_ratio:.2f}"
        why = []
        if not self.ks_pass:
            why.append(f"z^2 departs from chi-squared(1) (KS {self.ks:.3f})")
        if not self.kurtosis_pass:
            why.append(f"{'heavier' if self.excess_kurtosis > 0 else 'lighter'} tails than Gaussian (excess kurtosis {self.excess_kurtosis:.2f})")
        if not self.dispersion_pass:
            why.append(f"per-image sums are {'over' if self.dispersion_ratio > 1 else 'under'}-dispersed (var(S)/2D = {self.dispersion_ratio:.2f}; "
                       "independent elements give 1): residual elements are not independent")
        return "not consistent with chi-squared: " + "; ".join(why)


def standardise(r: np.ndarray, t: np.ndarray, edges: np.ndarray):
    """z = r / sigma_b with sigma_b the RMS of r in t's bin. Returns z [M, D], bin index [M], sigma^2 per bin."""
    b = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    ms = np.array([np.mean(np.square(r[b == k], dtype=np.float64)) if np.any(b == k) else np.nan for k in range(len(edges) - 1)])
    return r / np.sqrt(ms[b])[:, None], b, ms


def chi_squared_check(r: np.ndarray, t: np.ndarray, edges: np.ndarray, cfg: ResidualsConfig) -> tuple[ChiSquaredResult, np.ndarray, np.ndarray]:
    """The three tests on residuals r [M, D] at timesteps t [M]. Returns (result, z, per-bin sigma^2)."""
    z, b, ms = standardise(r.astype(np.float64), t, edges)
    D = r.shape[1]
    flat = z.ravel()
    rng = np.random.default_rng(cfg.seed)
    sub = flat if flat.size <= KS_MAX_ELEMENTS else rng.choice(flat, KS_MAX_ELEMENTS, replace=False)
    ks = float(stats.kstest(np.square(sub), stats.chi2(1).cdf).statistic)
    kurt = float(stats.kurtosis(flat, fisher=True))
    # Standardising makes mean(S) = D exactly within each bin, costing one degree of freedom per
    # bin: the pooled within-bin variance divides by M - bins (the plain variance would be biased low).
    S = np.square(z).sum(1)
    dof = len(S) - len(np.unique(b))
    disp = float(np.sum(np.square(S - D)) / dof / (2 * D)) if dof > 0 else float("nan")
    disp_se = float(np.sqrt(2 / dof)) if dof > 0 else float("nan")  # sd of a variance ratio with dof degrees of freedom
    lo, hi = cfg.dispersion_range
    res = ChiSquaredResult(
        ks=ks,
        excess_kurtosis=kurt,
        dispersion_ratio=disp,
        dispersion_se=disp_se,
        D=D,
        n_residuals=int(flat.size),
        ks_pass=ks <= cfg.max_ks,
        kurtosis_pass=abs(kurt) <= cfg.max_abs_excess_kurtosis,
        dispersion_pass=lo <= disp <= hi,
        verdict=False,
    )
    res.verdict = res.ks_pass and res.kurtosis_pass and res.dispersion_pass
    return res, z, ms


def loss_curve(edges: np.ndarray, ms: np.ndarray, t: np.ndarray, T: int) -> np.ndarray:
    """sigma^2(t) for every t in 0..T-1: bin means interpolated between the bins' mean t."""
    b = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    centres = np.array([t[b == k].mean() for k in range(len(ms))])
    ok = np.isfinite(ms)
    return np.interp(np.arange(T), centres[ok], ms[ok])


def predicted_epoch_std(sigma2_t: np.ndarray, D: int, n: int) -> float:
    """Std of the mean of n per-sample losses L = sigma^2(t) chi2(D)/D, t ~ U{0..T-1}."""
    e1 = sigma2_t.mean()
    e2 = np.mean(np.square(sigma2_t)) * (1 + 2 / D)
    return float(np.sqrt(max(e2 - e1**2, 0.0) / n))


def observed_epoch_std(losses, tail: float = 0.5) -> float:
    """Epoch-to-epoch spread of a loss series over its last `tail` fraction, trend removed.

    std(first differences) / sqrt(2): for independent noise around a slowly moving mean this is
    the noise's own std, and the slow descent of training does not inflate it.
    """
    x = np.asarray(losses, dtype=np.float64)
    x = x[int(len(x) * (1 - tail)) :]
    if len(x) < 3:
        return float("nan")
    return float(np.std(np.diff(x), ddof=1) / np.sqrt(2))


@dataclass
class SpikeResult:
    observed_std: float
    predicted_std: float
    ratio: float
    n_per_epoch: int
    epochs_used: int
    spikes_are_noise: bool

    def reading(self) -> str:
        if not np.isfinite(self.ratio):
            return "too few epochs to measure the epoch-to-epoch spread"
        if self.spikes_are_noise:
            return f"train-loss spread is what chi-squared sampling noise predicts (observed/predicted = {self.ratio:.2f})"
        return f"train loss moves {self.ratio:.1f}x more between epochs than sampling noise predicts: the spikes are not just noise"


def spike_check(train_losses, sigma2_t: np.ndarray, D: int, n_per_epoch: int, ratio_max: float) -> SpikeResult:
    obs = observed_epoch_std(train_losses)
    pred = predicted_epoch_std(sigma2_t, D, n_per_epoch)
    ratio = obs / pred if pred > 0 and np.isfinite(obs) else float("nan")
    return SpikeResult(obs, pred, ratio, n_per_epoch, len(train_losses) - int(len(train_losses) * 0.5), bool(np.isfinite(ratio) and ratio <= ratio_max))


def metrics(chi: ChiSquaredResult, spikes: SpikeResult) -> dict:
    out = {f"chi2_{k}": v for k, v in asdict(chi).items()}
    out.update({f"spike_{k}": v for k, v in asdict(spikes).items()})
    return out

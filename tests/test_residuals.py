"""The chi-squared check: passes on Gaussian residuals, fails on heavy tails and correlation; the spike ratio."""

import numpy as np
import pytest
import torch

from ddpmlab.residuals import check as R
from ddpmlab.config import ResidualsConfig
from ddpmlab.diffusion.schedule import Schedule, linear_betas

CFG = ResidualsConfig(t_bins=10, draws_per_bin=4, max_ks=0.05, max_abs_excess_kurtosis=1.0, dispersion_range=(0.5, 2.0), spike_ratio_max=3.0, seed=0)


def zero_model(x, t):
    return torch.zeros_like(x)


def test_zero_model_residuals_are_the_noise_and_pass():
    """eps_theta = 0 makes r the true Gaussian noise: the check must pass."""
    sched = Schedule(linear_betas(100))
    val = torch.rand(15, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t, r = R.collect_residuals(zero_model, sched, val, CFG.t_bins, CFG.draws_per_bin, seed=0)
    assert r.shape == (15 * 10 * 4, 3 * 16 * 16) and t.min() >= 0 and t.max() < 100
    assert len(np.unique(np.searchsorted(R.bin_edges(100, 10), t, side="right"))) == 10  # every bin covered
    res, z, ms = R.chi_squared_check(r, t, R.bin_edges(100, 10), CFG)
    assert res.verdict, res
    assert res.ks < 0.01 and abs(res.excess_kurtosis) < 0.05 and abs(res.dispersion_ratio - 1) < 4 * res.dispersion_se
    assert np.allclose(ms, 1, atol=0.02)


def synthetic(sampler, n=600, D=768, seed=0):
    rng = np.random.default_rng(seed)
    t = np.repeat(np.arange(10), n // 10) * 10
    scale = np.linspace(1.0, 0.05, 10)[t // 10][:, None]  # a t-dependent scale the check must remove
    return t, sampler(rng, (n, D)) * scale


def test_gaussian_with_t_dependent_scale_passes():
    t, r = synthetic(lambda g, s: g.standard_normal(s))
    assert R.chi_squared_check(r, t, R.bin_edges(100, 10), CFG)[0].verdict


def test_heavy_tails_fail():
    t, r = synthetic(lambda g, s: g.standard_t(5, s))
    res = R.chi_squared_check(r, t, R.bin_edges(100, 10), CFG)[0]
    assert not res.verdict and not res.kurtosis_pass and res.excess_kurtosis > 2
    assert "heavier tails" in res.reading()


def test_correlated_residuals_fail_dispersion():
    # each image's residual shares a common component: Gaussian marginals, but not independent
    t, r = synthetic(lambda g, s: 0.9 * g.standard_normal(s) + 0.45 * g.standard_normal((s[0], 1)))
    res = R.chi_squared_check(r, t, R.bin_edges(100, 10), CFG)[0]
    assert res.ks_pass and res.kurtosis_pass and not res.dispersion_pass and res.dispersion_ratio > 10
    assert "not independent" in res.reading()


def epoch_losses(sigma2_t, D, n, epochs, rng):
    """Per-epoch mean training loss under the chi-squared model with random t."""
    T = len(sigma2_t)
    t = rng.integers(0, T, (epochs, n))
    return (sigma2_t[t] * rng.chisquare(D, (epochs, n)) / D).mean(1)


def test_spike_ratio_is_one_for_chi_squared_noise():
    rng = np.random.default_rng(0)
    sigma2 = np.linspace(0.3, 0.002, 1000) ** 1.5
    losses = epoch_losses(sigma2, 3072, 136, 400, rng)
    res = R.spike_check(losses, sigma2, 3072, 136, ratio_max=3.0)
    assert res.ratio == pytest.approx(1.0, abs=0.2) and res.spikes_are_noise


def test_spike_ratio_flags_real_spikes():
    rng = np.random.default_rng(1)
    sigma2 = np.linspace(0.3, 0.002, 1000) ** 1.5
    losses = epoch_losses(sigma2, 3072, 136, 400, rng)
    losses[rng.choice(400, 40, replace=False)] *= 3.0  # optimisation blow-ups
    res = R.spike_check(losses, sigma2, 3072, 136, ratio_max=3.0)
    assert res.ratio > 3 and not res.spikes_are_noise


def test_slow_trend_does_not_count_as_spread():
    rng = np.random.default_rng(2)
    sigma2 = np.full(1000, 0.05)
    losses = epoch_losses(sigma2, 3072, 136, 300, rng) + np.linspace(0.2, 0.0, 300)
    assert R.spike_check(losses, sigma2, 3072, 136, 3.0).ratio == pytest.approx(1.0, abs=0.25)


def test_predicted_std_closed_form():
    # constant sigma^2: L = s chi2(D)/D has variance 2 s^2 / D
    assert R.predicted_epoch_std(np.full(100, 0.5), D=50, n=10) == pytest.approx(np.sqrt(2 * 0.25 / 50 / 10))

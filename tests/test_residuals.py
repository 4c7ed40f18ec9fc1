"""The chi-squared check: exact nulls, pivotality in sigma^2(t), each cause named, the spike ratio, the CLI.

Calibration (false-alarm rates) and power are in test_residuals_calibration.py.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddpmlab.core.schedule import Schedule, linear_betas
from ddpmlab.core.residuals import check as R
from ddpmlab.core.residuals import simulate as S
from ddpmlab.tools.residuals import main as cli
from ddpmlab.pipeline.stages.residuals import collect_residuals

NAMES = [n for ns in R.COMPONENTS.values() for n in ns]


def zero_model(x, t):
    return torch.zeros_like(x)


def test_zero_model_residuals_share_t_and_pass():
    """eps_theta = 0 makes r the true noise: every t of the grid is shared by all images, and the check passes."""
    sched = Schedule(linear_betas(100))
    val = torch.rand(15, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    r, t, tk, w = collect_residuals(zero_model, sched, val, n_t=10, draws=2, seed=0)
    assert r.shape == (10 * 2 * 15, 3, 16, 16) and t.min() >= 0 and t.max() < 100
    assert np.array_equal(np.unique(t), tk) and np.all(np.bincount(np.searchsorted(tk, t)) == 30)
    assert w.sum() == pytest.approx(1.0)
    res, s2, _ = R.chi_squared_check(r, t, 100)
    assert res.verdict, res.reading()
    assert np.all(np.abs(s2.sigma2 - 1) < 4 * s2.se)  # sigma^2(t) = 1 for the true noise


def test_t_grid_strata_cover_0_to_T_and_are_unbiased():
    T = 1000
    t, w = R.t_grid(T, 40, np.random.default_rng(0))
    edges = np.unique(np.round(T * (np.arange(41) / 40) ** 2).astype(int))
    assert len(t) == len(edges) - 1 and np.all((t >= edges[:-1]) & (t < edges[1:])) and w.sum() == pytest.approx(1)
    assert edges[1] - edges[0] == 1 and w[-1] > 40 * w[0]  # narrow at small t
    # E_t[f] by sum w f(t_k) is unbiased for t ~ U{0..T-1}: mean over 2,000 grids within 4 standard errors
    f = S.CURVES["exp"](np.arange(T), T) ** 2
    est = np.array([R.t_grid(T, 40, np.random.default_rng(i))[1] @ f[R.t_grid(T, 40, np.random.default_rng(i))[0]] for i in range(2000)])
    assert abs(est.mean() - f.mean()) < 4 * est.std() / np.sqrt(len(est))
    assert len(R.t_grid(20, 40, np.random.default_rng(0))[0]) <= 20  # small T: strata merge, t stay distinct


def test_exact_null_moments_of_the_row_statistics():
    """E[b2] = 3D/(D+2) and P(u^2 <= q) = Beta(1/2, (D-1)/2).cdf(q/D) for a row of D iid Gaussians (small D shows the exactness)."""
    r = np.random.default_rng(1).standard_normal((200_000, 1, 4, 2))  # D = 8
    rows = R.row_statistics(r)
    b2, n = rows["b2"], len(r)
    assert abs(b2.mean() - 3 * 8 / 10) < 4 * b2.std() / np.sqrt(n)
    assert abs(b2.mean() - 3) > 20 * b2.std() / np.sqrt(n)  # the naive null (3) is far off at D = 8
    se = rows["cdf"].std(0) / np.sqrt(n)
    assert np.all(np.abs(rows["cdf"].mean(0) - R.null_cdf(8)) <= 4 * se), (rows["cdf"].mean(0), R.null_cdf(8))
    for k in ("rho_h", "rho_v"):
        assert abs(rows[k].mean()) < 4 * rows[k].std() / np.sqrt(n)
    assert np.all(np.isnan(rows["rho_c"]))  # one channel: no channel pairs


def test_statistics_do_not_depend_on_sigma_t():
    """Pivotal: the same Gaussian draw scaled by four sigma^2(t) curves (50x over t) gives the same p-values and verdict."""
    out = []
    for curve in S.CURVES:
        r, t = S.residuals("null", np.random.default_rng(5), curve=curve)
        res = R.chi_squared_check(r, t, 1000)[0]
        out.append(([getattr(res, f"{n}_p") for n in NAMES], res.verdict))
    for ps, v in out[1:]:
        assert np.allclose(ps, out[0][0], atol=1e-6) and v == out[0][1]


def test_old_binned_dispersion_artefact_is_gone():
    """The issue's case: sigma^2(t) = 0.02 + 0.5 exp(-t/40) made the binned check cry 'not independent' (dispersion 83.6)."""
    rng = np.random.default_rng(11)
    t = np.repeat(rng.integers(0, 1000, 40), 15)
    r = (rng.standard_normal((600, 3, 32, 32)) * np.sqrt(0.02 + 0.5 * np.exp(-t / 40))[:, None, None, None]).astype(np.float32)
    res = R.chi_squared_check(r, t, 1000)[0]
    assert res.verdict and res.correlation_ok and res.scale_ok, res.reading()
    assert res.scale < 0.01 and abs(res.rho_h) < 0.005


@pytest.mark.parametrize(
    "kind, strength, component",
    [("t", 3.0, "marginal"), ("t", 5.0, "marginal"), ("laplace", None, "marginal"), ("blur", 0.6, "correlation"), ("scale", 0.3, "scale")],
)
def test_each_alternative_fails_its_component(kind, strength, component):
    r, t = S.residuals(kind, np.random.default_rng(3), strength=strength)
    res = R.chi_squared_check(r, t, 1000)[0]
    assert not res.verdict and res.failed() == [component], res.reading()
    assert component in res.reading()


def test_effect_sizes_measure_the_cause():
    r, t = S.residuals("scale", np.random.default_rng(4), strength=0.3)
    s = R.chi_squared_check(r, t, 1000)[0]
    assert s.scale_lo <= 0.3 <= s.scale_hi and 0.25 < s.scale < 0.35
    r, t = S.residuals("laplace", np.random.default_rng(4))
    k = R.chi_squared_check(r, t, 1000)[0]
    assert 2.7 < k.kurtosis < 3.3 and k.kurtosis_lo < k.kurtosis < k.kurtosis_hi  # Laplace: 3
    r, t = S.residuals("blur", np.random.default_rng(4), strength=1.0)
    b = R.chi_squared_check(r, t, 1000)[0]
    assert b.rho_h > 0.7 and b.rho_v > 0.7 and b.rho_c_lo < 0 < b.rho_c_hi  # blurred in space, not across channels
    r, t = S.residuals("null", np.random.default_rng(4))
    r[:, 1] = 0.6 * r[:, 0] + 0.8 * r[:, 1]  # channel 1 shares channel 0's noise: pair (0, 1) has 0.6, the mean of 3 pairs 0.2
    c = R.chi_squared_check(r, t, 1000)[0]
    assert c.failed() == ["correlation"] and c.rho_c_lo < 0.2 < c.rho_c_hi and "channel" in c.correlation_reading()


def test_holm_step_down():
    assert R.holm({"a": 0.001, "b": 0.004, "c": 0.04}, 0.01) == {"a": True, "b": True, "c": False}  # 0.001 <= 0.01/3, 0.004 <= 0.01/2
    assert R.holm({"a": 0.004, "b": 0.004, "c": 0.5}, 0.01) == {"a": False, "b": False, "c": False}  # 0.004 > 0.01/3 stops
    assert R.holm({"a": 0.001, "b": float("nan")}, 0.01) == {"a": True, "b": False}  # NaN is not a test


def test_metrics_round_trip_and_reading():
    r, t = S.residuals("blur", np.random.default_rng(2))
    res = R.chi_squared_check(r, t, 1000)[0]
    m = json.loads(json.dumps(R.metrics(res)))
    back = R.from_metrics(R.CheckResult, m, "chi2_")
    assert back.reading() == res.reading() and "correlated" in back.reading() and "horizontal" in back.reading()


def test_quick_stats_for_training_logs():
    r, t = S.residuals("blur", np.random.default_rng(2), n_t=4)
    q = R.quick_stats(r, t)
    assert set(q) == {"excess_kurtosis", "rho_h", "rho_v", "rho_c", "scale_sd"} and q["rho_h"] > 0.4 and abs(q["excess_kurtosis"]) < 0.1
    assert np.isnan(R.quick_stats(r[:10], np.arange(10))["scale_sd"])  # no t shared: no scale statistic


# ---------------------------------------------------------------------------------------------
# bad input: one line each


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r, t: (r[:, 0], t), "r must be a float array"),
        (lambda r, t: (r.astype(np.int32), t), "r must be a float array"),
        (lambda r, t: (r, t[:-1]), "t must be an integer array"),
        (lambda r, t: (r, t.astype(float)), "t must be an integer array"),
        (lambda r, t: (np.where(np.arange(r.shape[0])[:, None, None, None] == 3, np.nan, r), t), "NaN"),
        (lambda r, t: (r, t + 1000), "0..T-1"),
        (lambda r, t: (r, np.arange(len(t))), "too few rows per t"),
        (lambda r, t: (r[..., :2, :], t), "at least 4 x 2"),
        (lambda r, t: (r * (np.arange(len(t)) != 0)[:, None, None, None], t), "all zero"),
    ],
)
def test_bad_input_is_one_line(change, message):
    r, t = S.residuals("null", np.random.default_rng(0), n_images=3, n_t=8, shape=(3, 8, 8))
    with pytest.raises(R.ResidualInputError, match=message) as e:
        R.chi_squared_check(*change(r, t), 1000)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# the command line


@pytest.fixture
def npz(tmp_path):
    def make(kind, name="r.npz", **kw):
        r, t = S.residuals(kind, np.random.default_rng(0), n_images=6, n_t=20, shape=(3, 16, 16), **kw)
        p = tmp_path / name
        np.savez(p, r=r, t=t, T=1000)
        return p

    return make


def test_cli_exit_0_when_consistent(npz, capsys):
    assert cli(["check", str(npz("null"))]) == 0
    assert capsys.readouterr().out.startswith("consistent with the chi-squared conjecture")
    assert cli(["check", str(npz("scale", strength=0.3))]) == 1
    assert "differs between images at the same t" in capsys.readouterr().out


def test_cli_exit_1_and_json(npz, capsys):
    assert cli(["check", str(npz("blur")), "--json", "--alpha", "0.05"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "not consistent" and doc["alpha"] == 0.05 and doc["components"]["correlation"] is False
    assert set(doc["tests"]) == set(NAMES) and all({"statistic", "p", "effect", "ci95"} <= set(v) for v in doc["tests"].values())
    assert doc["tests"]["rho_h"]["rejected"] and "correlated" in doc["reading"]


def test_cli_exit_2_on_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, r=np.zeros((4, 3, 8, 8)), t=np.zeros(4, int))  # no T
    assert cli(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "missing arrays ['T']" in err and err.count("\n") == 1
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert cli(["check", str(tmp_path / "junk.npz")]) == 2
    assert "not a readable .npz" in capsys.readouterr().err
    r = np.random.default_rng(0).standard_normal((8, 3, 8, 8))
    np.savez(bad, r=r, t=np.arange(8), T=10)
    assert cli(["check", str(bad)]) == 2
    assert "too few rows per t" in capsys.readouterr().err


def test_cli_as_a_module(npz):
    """The real entry point: --help, and the exit status of `python -m ddpmlab.tools.residuals check`."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "ddpmlab.tools.residuals", *a], capture_output=True, text=True)  # noqa: E731
    h = run("check", "--help")
    assert h.returncode == 0 and "--alpha" in h.stdout and "--json" in h.stdout
    p = run("check", str(npz("scale", strength=0.3)), "--alpha", "2")
    assert p.returncode == 2 and p.stderr.strip() == "residuals check: alpha must lie in (0, 1), got 2.0"


# ---------------------------------------------------------------------------------------------
# loss spikes


def chi2_epoch_losses(sigma2_t, D, n, epochs, rng):
    """Per-epoch mean training loss under the chi-squared model with t ~ U{0..T-1}."""
    t = rng.integers(0, len(sigma2_t), (epochs, n))
    return (sigma2_t[t] * rng.chisquare(D, (epochs, n)) / D).mean(1)


def spike_run(rng, curve="exp", T=1000, D=3072, n=136, epochs=300, rows=15, extra=None):
    """sigma^2(t) estimated as the stage does (grid, `rows` per t), then the spike check on synthetic train losses."""
    s_all = S.CURVES[curve](np.arange(T), T)
    tk, w = R.t_grid(T, 40, rng)
    t = np.repeat(tk, rows)
    s2 = R.sigma2_by_t(S.CURVES[curve](t.astype(float), T) * rng.chisquare(D, len(t)) / D, t)
    losses = chi2_epoch_losses(s_all, D, n, epochs, rng)
    if extra is not None:
        losses = extra(losses, rng)
    return R.spike_check(losses, s2, w, D, n, 0.01, np.round(w * T).astype(int))


@pytest.mark.parametrize("curve", ["exp", "hyperbolic", "linear"])
def test_spike_ratio_is_one_within_its_standard_error(curve):
    """On losses drawn from the chi-squared model the ratio is 1: over 60 runs its mean is within 4 SE of 1,
    its spread matches the reported SE, and single runs read as noise."""
    res = [spike_run(np.random.default_rng([9, i]), curve) for i in range(60)]
    ratio = np.array([x.ratio for x in res])
    se = np.array([x.ratio_se for x in res])
    assert abs(ratio.mean() - 1) < 4 * ratio.std() / np.sqrt(len(ratio)), ratio.mean()
    assert 0.7 < ratio.std() / se.mean() < 1.3  # the reported SE is the real one
    assert np.mean([x.spikes_are_noise for x in res]) > 0.9


def test_spike_ratio_flags_real_spikes():
    def blowups(losses, rng):
        losses[rng.choice(len(losses), 30, replace=False)] *= 2.0  # optimisation blow-ups
        return losses

    res = spike_run(np.random.default_rng(1), extra=blowups)
    assert res.ratio > 1.5 and res.ratio - 1 > 3 * res.ratio_se and not res.spikes_are_noise and "something else" in res.reading()


def test_slow_trend_does_not_count_as_spread():
    res = spike_run(np.random.default_rng(2), extra=lambda x, rng: x + np.linspace(0.05, 0.0, len(x)))
    assert abs(res.ratio - 1) < 3 * res.ratio_se


def test_predicted_std_closed_form():
    # constant sigma^2 = s: L = s chi2(D)/D has variance 2 s^2 / D, and no uncertainty from the grid
    std, se = R.predicted_epoch_std(np.full(10, 0.5), np.full(10, 0.1), D=50, n=10)
    assert std == pytest.approx(np.sqrt(2 * 0.25 / 50 / 10)) and se == pytest.approx(0)


@pytest.mark.parametrize("T, shown", [(np.inf, "inf"), (20.5, "20.5"), (1000.0, "1000.0"), (0, "0"), (True, "True")])
def test_cli_T_must_be_a_positive_integer(tmp_path, T, shown):
    """T = inf once crashed with exit 1 (the "not consistent" status) and T = 20.5 was taken as 20: now exit 2, one line."""
    r, t = S.residuals("null", np.random.default_rng(0), n_images=6, n_t=20, shape=(3, 16, 16))
    p = tmp_path / "r.npz"
    np.savez(p, r=r, t=t, T=T)
    out = subprocess.run([sys.executable, "-m", "ddpmlab.tools.residuals", "check", str(p)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert "T must be one positive integer" in out.stderr and shown in out.stderr


def test_anti_correlated_halves_are_read_as_what_they_are():
    """Residuals whose top and bottom halves move in opposite directions in scale (as two diffusers UNet2DModels'
    did): a shared per-image scale cannot produce a negative split-half covariance, so the check says so and
    reports no scale sd, instead of "0% (CI 0% to 0%)"."""
    rng = np.random.default_rng(11)
    M, T = 200, 1000
    t = np.repeat(np.arange(0, T, T // 20), M // 20)
    r = rng.standard_normal((M, 3, 16, 16))
    a = rng.normal(0, 0.2, M)[:, None, None, None]
    r[:, :, :8] *= np.exp(a)
    r[:, :, 8:] *= np.exp(-a)
    res, _, _ = R.chi_squared_check(r, t, T)
    assert res.scale_cov_hi < 0 and np.isnan(res.scale) and np.isnan(res.scale_lo) and np.isnan(res.scale_hi)
    assert "anti-correlated in log scale" in res.reading() and "0% to 0%" not in res.reading()
    assert R.from_metrics(R.CheckResult, R.metrics(res), "chi2_").scale_cov == pytest.approx(res.scale_cov)
    # independent halves: the covariance interval is calibrated (covers 0 in about 95% of draws), so the
    # contradiction reading (its upper end below 0) comes up in about 2.5% of them
    covered = flagged = 0
    for seed in range(20):
        null, _, _ = R.chi_squared_check(np.random.default_rng(100 + seed).standard_normal((M, 3, 16, 16)), t, T)
        covered += null.scale_cov_lo < 0 < null.scale_cov_hi
        flagged += "anti-correlated" in null.reading()
        assert np.isfinite(null.scale) or null.scale_cov_hi < 0
    assert covered >= 17 and flagged <= 2, (covered, flagged)

"""Calibration and power of the chi-squared check, by simulation (seeded: every run draws the same data).

Under the hypothesis (iid Gaussian residuals, sigma^2(t) one of three curves that vary 50x over t,
rotating across draws) each test's false-alarm rate is its nominal level and the verdict's is at
most alpha (Holm). Against each alternative the right component fails. CI runs small draw counts
with bounds of 3 binomial standard errors; `-m full` runs enough draws to show the rates:
    python -m pytest tests/test_residuals_calibration.py -m full -q
(measured figures: docs/pipeline.md, "The chi-squared check").
"""

import numpy as np
import pytest
from scipy import stats

from ddpmlab.core.residuals import check as R
from ddpmlab.core.residuals.simulate import rejection_rates

DEFAULT = dict(n_images=15, n_t=40, draws=1, shape=(3, 24, 24), T=1000)  # the default run: 600 rows of 3x24x24
TEN_X = dict(DEFAULT, draws=10)  # 6,000 rows, 150 per t
SHARE = {c: len(ns) / 6 for c, ns in R.COMPONENTS.items()}  # a component's part of alpha: its m_c of the 6 tests


def se(p, n):
    return np.sqrt(p * (1 - p) / n)


def holm_rates(ps: np.ndarray, names: list, alpha: float) -> dict:
    """Rejection rate of each component and of the verdict when Holm at `alpha` is applied to stored p-values [n, 6]."""
    out = {c: 0 for c in R.COMPONENTS} | {"any": 0}
    for row in ps:
        rej = R.holm(dict(zip(names, row)), alpha)
        for c, ns in R.COMPONENTS.items():
            out[c] += any(rej[n] for n in ns)
        out["any"] += any(rej.values())
    return {k: v / len(ps) for k, v in out.items()}


def assert_calibrated(res: dict, n: int, level: float):
    """Each test's raw rate at `level` within 3 SE of it and its p-values uniform (KS p > 0.001); Holm's verdict at
    alpha <= alpha + 3 SE, each component <= its share."""
    ps, names = res["p"], res["names"]
    for j, name in enumerate(names):
        rate = np.mean(ps[:, j] < level)
        assert abs(rate - level) <= 3 * se(level, n), f"{name}: false-alarm rate {rate:.3f} at nominal {level} over {n} draws"
        assert stats.kstest(ps[:, j], "uniform").pvalue > 1e-3, f"{name}: p-values not uniform under the hypothesis"
    for alpha in (0.01, 0.1):
        rates = holm_rates(ps, names, alpha)
        assert rates["any"] <= alpha + 3 * se(alpha, n), (alpha, rates)
        for c in R.COMPONENTS:
            # Holm's first step is Bonferroni: a component with m_c of the 6 tests alarms first with
            # probability <= alpha m_c / 6; it can alarm later only in a draw with two alarms (order alpha^2)
            share = alpha * SHARE[c]
            assert rates[c] <= share + 3 * se(share, n) + alpha**2, (c, alpha, rates)


@pytest.fixture(scope="module")
def null_default_ci():
    return rejection_rates("null", 100, seed=1, **DEFAULT)


def test_false_alarm_rates_at_default_size(null_default_ci):
    """100 draws at the default's sizes: each test near 10% at level 0.1 (within 3 SE = 9%), the verdict <= alpha."""
    assert_calibrated(null_default_ci, 100, 0.1)
    assert null_default_ci["any"] <= 0.01 + 3 * se(0.01, 100)  # the verdict at the default alpha 0.01


def test_false_alarm_rates_at_ten_times_the_rows():
    res = rejection_rates("null", 8, seed=2, **TEN_X)
    assert res["any"] <= 1 / 8  # expected 0.01: at most one of 8 (slow test: the rate over 200 draws)
    assert np.all(res["p"] > 1e-4)  # no test is wildly off at 6,000 rows


@pytest.mark.parametrize(
    "kind, strength, component",
    [("t", 3.0, "marginal"), ("t", 5.0, "marginal"), ("laplace", None, "marginal"), ("blur", 0.6, "correlation"), ("scale", 0.3, "scale")],
)
def test_alternatives_fail_their_component(kind, strength, component):
    res = rejection_rates(kind, 2, seed=3, strength=strength, **DEFAULT)
    assert res[component] == 1.0 and res["any"] == 1.0


# ---------------------------------------------------------------------------------------------
# the full-size measurement (`-m slow`): the rates quoted in docs/pipeline.md


@pytest.mark.full
def test_false_alarm_rates_measured_at_default_size():
    """1,000 draws (about 5 CPU-minutes): each test's rate at 0.05 within 3 SE (2.1 points), at 0.01 at most 1% + 3 SE;
    Holm's verdict and each component at most their nominal level + 3 SE."""
    n = 1000
    res = rejection_rates("null", n, seed=101, **DEFAULT)
    assert_calibrated(res, n, 0.05)
    for j, name in enumerate(res["names"]):
        assert np.mean(res["p"][:, j] < 0.01) <= 0.01 + 3 * se(0.01, n), name


@pytest.mark.full
def test_false_alarm_rates_measured_at_ten_times_the_rows():
    """100 draws of 6,000 rows (about 4 CPU-minutes)."""
    n = 100
    res = rejection_rates("null", n, seed=102, **TEN_X)
    assert_calibrated(res, n, 0.05)


@pytest.mark.full
@pytest.mark.parametrize(
    "kind, strength, component",
    [("t", 3.0, "marginal"), ("t", 5.0, "marginal"), ("laplace", None, "marginal"), ("blur", 0.6, "correlation"), ("scale", 0.3, "scale")],
)
def test_power_measured_at_default_size(kind, strength, component):
    """100 draws each: the right component fails in (nearly) all, the others rarely (they test other parts of the conjecture)."""
    n = 100
    res = rejection_rates(kind, n, seed=103, strength=strength, **DEFAULT)
    assert res[component] >= 0.98, res
    for c in R.COMPONENTS:
        if c != component:
            assert res[c] <= 0.05, (c, res)

"""Schedule math against closed forms and golden values computed in float64."""

import numpy as np
import pytest
import torch

from ddpmlab.core.schedule import Schedule, cosine_betas, extract, linear_betas, make_betas, q_posterior_mean, q_sample

GOLDEN = {  # T: (alpha_bar_T, sqrt(alpha_bar_T)) for linear betas 1e-4..0.02
    250: (7.97e-2, 0.282),
    500: (6.35e-3, 0.0797),
    750: (5.06e-4, 0.0225),
    1000: (4.04e-5, 6.35e-3),
    1250: (3.22e-6, 1.79e-3),
}


@pytest.mark.parametrize("T", sorted(GOLDEN))
def test_linear_golden_values(T):
    s = Schedule(linear_betas(T))
    ab, sab = GOLDEN[T]
    assert s.alpha_bar[-1] == pytest.approx(ab, rel=5e-3)
    assert s.sqrt_alpha_bar[-1] == pytest.approx(sab, rel=5e-3)


def test_sqrt_alpha_bar_1000_is_not_1e5():
    # ~1e-5, sometimes quoted, is alpha_bar_T's order, not its square root
    s = Schedule(linear_betas(1000))
    assert 6.3e-3 < s.sqrt_alpha_bar[-1] < 6.4e-3
    assert 4.0e-5 < s.alpha_bar[-1] < 4.1e-5


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_alpha_bar_strictly_decreasing_in_unit_interval(name):
    s = Schedule(make_betas(name, 300))
    assert np.all(np.diff(s.alpha_bar) < 0)
    assert np.all((s.alpha_bar > 0) & (s.alpha_bar < 1))
    assert s.alpha_bar_prev[0] == 1.0


def test_linear_endpoints():
    b = linear_betas(1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02) and len(b) == 1000


def test_cosine_matches_its_closed_form():
    T, s_ = 100, 0.008
    f = lambda t: np.cos((t / T + s_) / (1 + s_) * np.pi / 2) ** 2  # noqa: E731
    betas = cosine_betas(T)
    ab = np.cumprod(1 - betas)
    # all but the last step follow the closed form; beta_T (= 1 exactly) is clipped to 0.999 (Nichol & Dhariwal)
    assert np.allclose(ab[:-1], f(np.arange(1, T)) / f(0), rtol=1e-9)
    assert betas[-1] == 0.999


def test_posterior_variance_is_the_conditional_variance_of_the_chain():
    """beta_tilde_t (eq. 7) against Var(x_{t-1} | x_t, x_0) computed from the chain itself: the joint covariance
    of (x_{t-1}, x_t) given x_0, built by propagating x_s = sqrt(1-beta_s) x_{s-1} + sqrt(beta_s) e_s step by step
    (no alpha_bar products), then the Schur complement. Independent of how schedule.py writes the formula."""
    betas = linear_betas(50)
    s = Schedule(betas)
    var = 0.0  # Var(x_s | x_0), propagated one step at a time
    for t in range(50):
        var_prev = var
        var = (1 - betas[t]) * var_prev + betas[t]
        cov = np.sqrt(1 - betas[t]) * var_prev  # Cov(x_{t-1}, x_t | x_0)
        cond = var_prev - cov**2 / var
        assert s.posterior_variance[t] == pytest.approx(cond, rel=1e-9, abs=1e-15), t
    assert s.posterior_variance[0] == 0.0
    assert np.all(s.posterior_variance[1:] <= s.betas[1:])


def test_posterior_mean_is_gaussian_conditioning():
    """mu_tilde from eq. 7 equals the conditional mean computed from the joint Gaussian of (x_{t-1}, x_t) | x_0."""
    s = Schedule(linear_betas(30))
    for t in (1, 10, 29):
        a_t, ab_prev = s.alphas[t], s.alpha_bar_prev[t]
        # x_{t-1} = sqrt(ab_prev) x0 + sqrt(1-ab_prev) e1; x_t = sqrt(a_t) x_{t-1} + sqrt(1-a_t) e2
        x0, xt = 0.7, -0.3
        cov_prev_t = np.sqrt(a_t) * (1 - ab_prev)
        var_t = a_t * (1 - ab_prev) + (1 - a_t)
        mean = np.sqrt(ab_prev) * x0 + cov_prev_t / var_t * (xt - np.sqrt(s.alpha_bar[t]) * x0)
        var = (1 - ab_prev) - cov_prev_t**2 / var_t
        got = q_posterior_mean(s, torch.tensor([[x0]]), torch.tensor([[xt]]), torch.tensor([t]))
        assert float(got) == pytest.approx(mean, rel=1e-5)
        assert s.posterior_variance[t] == pytest.approx(var, rel=1e-9)


def test_q_sample_moments():
    s = Schedule(linear_betas(1000))
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.5)
    for t in (0, 300, 999):
        tt = torch.full((len(x0),), t)
        xt = q_sample(s, x0, tt, torch.randn(x0.shape, generator=g))
        assert float(xt.mean()) == pytest.approx(0.5 * s.sqrt_alpha_bar[t], abs=5e-3)
        assert float(xt.var()) == pytest.approx(1 - s.alpha_bar[t], rel=2e-2, abs=1e-4)


def test_extract_broadcasts_per_batch_element():
    coef = np.arange(10, dtype=np.float64)
    out = extract(coef, torch.tensor([3, 7]), (2, 3, 4, 4))
    assert out.shape == (2, 1, 1, 1) and out.flatten().tolist() == [3.0, 7.0]


@pytest.mark.parametrize("T", [0, -5, 2.5, True, "1000"])
def test_bad_T_is_refused(T):
    with pytest.raises(ValueError, match=r"\bT\b.*integer >= 1"):
        make_betas("linear", T)


def test_unknown_schedule_lists_allowed():
    with pytest.raises(ValueError, match="'sigmoid'.*linear, cosine"):
        make_betas("sigmoid", 100)


def test_inverted_linear_betas_rejected():
    with pytest.raises(ValueError, match="beta_start"):
        make_betas("linear", 100, 0.02, 1e-4)


def test_extract_keeps_one_device_copy_per_array_and_drops_it_with_the_array():
    """Off the CPU, extract copies a schedule array to the device once (a host-to-device copy stalls the
    GPU stream every step otherwise) and forgets it when the array goes. The meta device stands in for
    CUDA: same code path, no GPU needed."""
    import gc

    import ddpmlab.core.schedule as S

    coef = np.linspace(0.1, 0.9, 10)
    t = torch.tensor([0, 3, 9], device="meta")
    before = len(S._DEVICE_COPIES)
    a = extract(coef, t, (3, 1, 2, 2))
    copy1 = S._DEVICE_COPIES[(id(coef), "meta")]
    extract(coef, t, (3, 1, 2, 2))
    assert S._DEVICE_COPIES[(id(coef), "meta")] is copy1 and len(S._DEVICE_COPIES) == before + 1
    assert a.device.type == "meta" and a.shape == (3, 1, 1, 1) and a.dtype == torch.float32
    extract(coef, torch.tensor([1, 2]), (2,))  # the CPU path never caches
    assert len(S._DEVICE_COPIES) == before + 1
    del coef
    gc.collect()
    assert len(S._DEVICE_COPIES) == before

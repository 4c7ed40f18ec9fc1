"""Equivalence with diffusers' schedulers (same betas, same inputs, tolerance 1e-5)."""

import numpy as np
import pytest
import torch

from ddpmlab.core.sampling import ddim_step, ddim_timesteps, ddpm_step
from ddpmlab.core.schedule import Schedule, cosine_betas, linear_betas

diffusers = pytest.importorskip("diffusers", reason="diffusers is a pinned test dependency (requirements.lock)")


def ddpm_sched(clip_sample=False, **kw):
    return diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, clip_sample=clip_sample,
                                   clip_sample_range=1.0, **kw)


def float64(sched, betas=None):
    """diffusers keeps its tables in float32, where 1 - alpha_bar_t cancels badly at small t (about 3e-4
    relative error at t=1); ours are computed in float64. Upcast theirs to compare formulas, not rounding.

    Upcasting keeps the rounding already in the float32 betas. Where `betas` (float64) are given, they must
    round to diffusers' own betas bit for bit; the tables are then rebuilt from them in float64 with diffusers'
    formulas (alphas = 1 - betas, alphas_cumprod = cumprod). squaredcos_cap_v2 needs this: float32(0.999), its
    capped last beta, leaves 1 - beta_999 off by 1.3e-5 relative, which x_0 = x_t / sqrt(alpha_bar) amplifies
    to about 1e-3 at t = 999, and its betas near 4e-5 at small t leave 1 - alpha_bar off by up to 5e-4."""
    if betas is not None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        assert torch.equal(betas.to(sched.betas.dtype), sched.betas), "not the betas diffusers rounded"
        sched.betas = betas
        sched.alphas = 1.0 - betas
        sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
    for name in ("betas", "alphas", "alphas_cumprod"):
        setattr(sched, name, getattr(sched, name).double())
    if hasattr(sched, "final_alpha_cumprod"):
        sched.final_alpha_cumprod = torch.as_tensor(sched.final_alpha_cumprod, dtype=torch.float64)
    return sched


def test_linear_and_cosine_tables():
    ours = Schedule(linear_betas(1000))
    theirs = ddpm_sched(beta_schedule="linear")
    np.testing.assert_allclose(theirs.betas.double().numpy(), ours.betas, atol=1e-7)
    np.testing.assert_allclose(theirs.alphas_cumprod.double().numpy(), ours.alpha_bar, rtol=1e-5, atol=1e-7)
    cos = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    np.testing.assert_allclose(cos.betas.double().numpy(), cosine_betas(1000), atol=1e-6)


class Fixed(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t):
        return self.out


@pytest.mark.parametrize("t", [1, 500, 999])
def test_one_ddpm_step(t):
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    theirs_s = float64(ddpm_sched(beta_schedule="linear", variance_type="fixed_small"))
    theirs = theirs_s.step(eps.double(), t, x.double(), generator=torch.Generator().manual_seed(1)).prev_sample.float()
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float()  # the noise diffusers drew
    ours = ddpm_step(Fixed(eps), Schedule(linear_betas(1000)), x, t, z, variance="small", clip=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t_index", [0, 10, 49])
def test_one_ddim_step(t_index):
    g = torch.Generator().manual_seed(2)
    x, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    theirs_s = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                       clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading", steps_offset=0)
    theirs_s.set_timesteps(50)
    float64(theirs_s)
    ts = ddim_timesteps(1000, 50, "leading")
    assert list(ts) == theirs_s.timesteps.tolist()
    t = int(ts[t_index])
    t_prev = int(ts[t_index + 1]) if t_index + 1 < len(ts) else -1
    theirs = theirs_s.step(eps.double(), t, x.double(), eta=0.0).prev_sample.float()
    ours = ddim_step(Fixed(eps), Schedule(linear_betas(1000)), x, t, t_prev, None, eta=0.0, clip=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("T, steps", [(1000, 50), (1000, 7), (200, 200), (100, 30), (10, 1)])
def test_ddim_timesteps_match_diffusers_for_every_spacing(spacing, T, steps):
    theirs = diffusers.DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=0)
    theirs.set_timesteps(steps)
    assert ddim_timesteps(T, steps, spacing).tolist() == theirs.timesteps.tolist()


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_one_ddim_step_every_spacing(spacing):
    """diffusers takes t_prev = t - T // steps; where our spacing's next timestep is that, one step must agree."""
    T, steps = 1000, 50
    theirs_s = diffusers.DDIMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                       clip_sample=False, set_alpha_to_one=True, timestep_spacing=spacing, steps_offset=0)
    theirs_s.set_timesteps(steps)
    float64(theirs_s)
    ts = ddim_timesteps(T, steps, spacing).tolist()
    pairs = [(t, p) for t, p in zip(ts, ts[1:]) if p == t - T // steps]
    assert pairs, f"{spacing}: no step where both implementations take the same t_prev"
    g = torch.Generator().manual_seed(3)
    x, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    for t, t_prev in pairs[:: max(1, len(pairs) // 4)]:
        theirs = theirs_s.step(eps.double(), t, x.double(), eta=0.0).prev_sample.float()
        ours = ddim_step(Fixed(eps), Schedule(linear_betas(T)), x, t, t_prev, None, eta=0.0, clip=False)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


OUR_BETAS = {"linear": linear_betas, "squaredcos_cap_v2": cosine_betas}  # diffusers' schedule name -> ours


def full_precision(beta_schedule):
    """The float64 betas diffusers rounds to float32, where we have them: its squaredcos_cap_v2 betas are
    float32(cosine_betas) bit for bit (float64 asserts it); its linear ones come from a float32 linspace."""
    return cosine_betas(1000) if beta_schedule == "squaredcos_cap_v2" else None


def ddpm_pair(t, beta_schedule, variance_type, clip, seed=0):
    """One DDPM step from both sides on the same x_t, eps and z -> (ours, theirs, unclipped x_0 predicted)."""
    g = torch.Generator().manual_seed(seed)
    x, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    theirs_s = float64(ddpm_sched(beta_schedule=beta_schedule, variance_type=variance_type, clip_sample=clip),
                       full_precision(beta_schedule))
    theirs = theirs_s.step(eps.double(), t, x.double(), generator=torch.Generator().manual_seed(1)).prev_sample.float()
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float()  # the noise diffusers drew
    sched = Schedule(OUR_BETAS[beta_schedule](1000))
    variance = {"fixed_small": "small", "fixed_large": "large"}[variance_type]
    ours = ddpm_step(Fixed(eps), sched, x, t, z, variance=variance, clip=clip)
    x0 = (x.double() - sched.sqrt_one_minus_alpha_bar[t] * eps.double()) / sched.sqrt_alpha_bar[t]
    return ours, theirs, x0


def ddim_sched(beta_schedule="linear", clip=False, steps=50):
    s = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule=beta_schedule,
                                clip_sample=clip, clip_sample_range=1.0, set_alpha_to_one=True,
                                timestep_spacing="leading", steps_offset=0)
    s.set_timesteps(steps)
    return float64(s, full_precision(beta_schedule))


def ddim_inputs(t_index, steps=50, seed=2):
    """x_t, eps, z and the (t, t_prev) pair of step t_index of a leading-spaced schedule (diffusers' t_prev)."""
    g = torch.Generator().manual_seed(seed)
    x, eps, z = (torch.randn(2, 3, 8, 8, generator=g) for _ in range(3))
    ts = ddim_timesteps(1000, steps, "leading")
    t = int(ts[t_index])
    t_prev = int(ts[t_index + 1]) if t_index + 1 < len(ts) else -1
    return x, eps, z, t, t_prev


@pytest.mark.parametrize("t", [1, 500, 999])
def test_one_ddpm_step_clipped(t):
    """clip=True clamps the predicted x_0 to [-1, 1] before the posterior mean: DDPMScheduler(clip_sample=True,
    clip_sample_range=1.0)."""
    ours, theirs, x0 = ddpm_pair(t, "linear", "fixed_small", clip=True)
    assert (x0.abs() > 1).any(), "inputs must make the clamp bite"
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("t_index", [0, 10, 49])
def test_one_ddim_step_clipped(t_index, eta):
    """ddim_step(clip=True) clamps x_0 and re-derives eps from the clamped x_0 (improved-diffusion's
    _predict_eps_from_xstart, GLIDE): DDIMScheduler(clip_sample=True).step(use_clipped_model_output=True).
    diffusers' default use_clipped_model_output=False keeps the network's eps in the direction term; that is
    a different sampler by definition, not the one we implement."""
    x, eps, z, t, t_prev = ddim_inputs(t_index)
    theirs_s = ddim_sched(clip=True)
    assert t in theirs_s.timesteps.tolist()
    sched = Schedule(linear_betas(1000))
    x0 = (x.double() - sched.sqrt_one_minus_alpha_bar[t] * eps.double()) / sched.sqrt_alpha_bar[t]
    assert (x0.abs() > 1).any(), "inputs must make the clamp bite"
    theirs = theirs_s.step(eps.double(), t, x.double(), eta=eta, use_clipped_model_output=True,
                           variance_noise=z.double()).prev_sample.float()
    ours = ddim_step(Fixed(eps), sched, x, t, t_prev, z, eta=eta, clip=True)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("eta", [0.5, 1.0])
@pytest.mark.parametrize("t_index", [0, 10, 48, 49])
def test_one_ddim_step_stochastic(t_index, eta):
    """eta > 0 adds sigma_t z with sigma_t = eta sqrt((1 - a_bar_prev)/(1 - a_bar_t)) sqrt(1 - a_bar_t/a_bar_prev)
    (Song et al. eq. 16) and shrinks the direction term to sqrt(1 - a_bar_prev - sigma_t^2): DDIMScheduler.step(eta=...,
    variance_noise=z) with the same z. At the final step (t_prev = -1, a_bar_prev = 1) sigma_t = 0 on both sides."""
    x, eps, z, t, t_prev = ddim_inputs(t_index)
    theirs_s = ddim_sched()
    theirs = theirs_s.step(eps.double(), t, x.double(), eta=eta, variance_noise=z.double()).prev_sample.float()
    ours = ddim_step(Fixed(eps), Schedule(linear_betas(1000)), x, t, t_prev, z, eta=eta, clip=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("t", [1, 500, 999])
def test_one_ddpm_step_cosine(t, clip):
    """cosine_betas (Nichol & Dhariwal eq. 17, beta capped at 0.999) is diffusers' squaredcos_cap_v2."""
    ours, theirs, _ = ddpm_pair(t, "squaredcos_cap_v2", "fixed_small", clip=clip)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("t_index", [0, 10, 49])
def test_one_ddim_step_cosine(t_index, eta):
    x, eps, z, t, t_prev = ddim_inputs(t_index)
    theirs_s = ddim_sched("squaredcos_cap_v2")
    theirs = theirs_s.step(eps.double(), t, x.double(), eta=eta, variance_noise=z.double()).prev_sample.float()
    ours = ddim_step(Fixed(eps), Schedule(cosine_betas(1000)), x, t, t_prev, z, eta=eta, clip=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("t", [0, 1, 2, 500, 999])
def test_one_ddpm_step_large_variance(t, beta_schedule):
    """variance="large" is sigma_t^2 = beta_t, diffusers' variance_type="fixed_large" (1 - a_bar_t / a_bar_{t-1}).

    The two differ by definition at the first step only: our table holds posterior_variance[1] at index 0 in
    place of beta_0 (Ho et al.'s reference code, where that entry only enters the variational bound), diffusers
    keeps beta_0. Neither adds noise at t = 0 (the step returns the posterior mean), so no step reads that entry
    and the two agree at every t, t = 0 included."""
    ours, theirs, _ = ddpm_pair(t, beta_schedule, "fixed_large", clip=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

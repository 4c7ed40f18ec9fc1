"""Equivalence with diffusers' schedulers (same betas, same inputs, tolerance 1e-5)."""

import numpy as np
import pytest
import torch

from ddpmlab.diffusion.sampling import ddim_step, ddim_timesteps, ddpm_step
from ddpmlab.diffusion.schedule import Schedule, cosine_betas, linear_betas

diffusers = pytest.importorskip("diffusers", reason="diffusers is a pinned test dependency (requirements.lock)")


def ddpm_sched(**kw):
    return diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, clip_sample=False, **kw)


def float64(sched):
    """diffusers keeps its tables in float32, where 1 - alpha_bar_t cancels badly at small t (about 3e-4
    relative error at t=1); ours are computed in float64. Upcast theirs to compare formulas, not rounding."""
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

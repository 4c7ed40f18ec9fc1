"""Training objective and samplers.

Randomness is an argument: every sampler draws image i's noise from its own generator, seeded by
stream (seed, SAMPLE_NOISE, i), so an image depends on (seed, index) and never on the batch it was
generated in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ddpmlab.core.names import PREDICTIONS, SPACINGS, VARIANCES
from ddpmlab.core.schedule import (
    Schedule,
    extract,
    predict_x0_from_eps,
    q_posterior_mean,
    q_sample,
)
from ddpmlab.core.streams import Stream, torch_generator


def v_target(sched: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = sqrt(a_bar_t) eps - sqrt(1 - a_bar_t) x_0 (Salimans & Ho 2022, section 4)."""
    return extract(sched.sqrt_alpha_bar, t, x0.shape) * noise - extract(sched.sqrt_one_minus_alpha_bar, t, x0.shape) * x0


def per_sample_loss(model, sched: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
    """The squared error of the network's own output averaged over C*H*W -> [N]: Ho et al. eq. 14
    || eps - eps_theta(x_t, t) ||^2 for eps-prediction, || v - v_theta(x_t, t) ||^2 for v-prediction.
    The eps-space error of a v-network is a_bar_t times its v error (eps_space_factor)."""
    out = model(q_sample(sched, x0, t, noise), t).float()
    target = noise if prediction == "eps" else v_target(sched, x0, t, noise)
    return (target - out).pow(2).flatten(1).mean(1)


def eps_space_factor(sched: Schedule, t: torch.Tensor, prediction: str) -> torch.Tensor:
    """Per-sample factor turning per_sample_loss into || eps - eps_theta ||^2: 1 (eps) or a_bar_t (v), since a
    v-network's eps_theta = sqrt(1 - a_bar) x_t + sqrt(a_bar) v_theta gives eps - eps_theta = sqrt(a_bar)(v - v_theta)."""
    if prediction == "eps":
        return torch.ones(len(t), device=t.device)
    return extract(sched.alpha_bar, t, t.shape)


class EpsFromV(torch.nn.Module):
    """A v-predicting network seen as an epsilon-predictor: eps = sqrt(1 - a_bar_t) x_t + sqrt(a_bar_t) v(x_t, t).

    Samplers, the validation loss and the residual check speak epsilon; this makes a v-network usable by
    all of them unchanged. It holds no weights of its own (save the wrapped network's state_dict)."""

    def __init__(self, net: torch.nn.Module, sched: Schedule):
        super().__init__()
        self.net = net
        self.sched = sched

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = self.net(x, t).float()
        return extract(self.sched.sqrt_one_minus_alpha_bar, t, x.shape) * x.float() + extract(self.sched.sqrt_alpha_bar, t, x.shape) * v


class AutoGuided(torch.nn.Module):
    """Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself", eq. 2):
    eps = eps_guide + w (eps_net - eps_guide), where the guide is a weaker version of the same network (here the
    EMA of the same run after a fraction of its epochs). Denoisers are linear in eps at a given (x_t, t), so
    guiding eps is guiding D. w = 1 is the network alone; w > 1 pushes away from the guide's errors."""

    def __init__(self, net: torch.nn.Module, guide: torch.nn.Module, w: float):
        super().__init__()
        self.net, self.guide, self.w = net, guide, float(w)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g = self.guide(x, t).float()
        return g + self.w * (self.net(x, t).float() - g)


def as_eps_predictor(net: torch.nn.Module, sched: Schedule, prediction: str) -> torch.nn.Module:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    return net if prediction == "eps" else EpsFromV(net, sched)


# ---------------------------------------------------------------------------------------------
# Sampling


@dataclass(frozen=True)
class SamplerSpec:
    sampler: str = "ddpm"  # names.SAMPLERS
    steps: int = 0  # ddim steps (ddpm uses all T)
    eta: float = 0.0  # ddim noise scale
    variance: str = "small"  # ddpm: names.VARIANCES, small (beta_tilde) | large (beta)
    spacing: str = "linspace"  # ddim timestep spacing
    clip_x0: bool = True  # clip the predicted x_0 to [-1, 1] (the reference implementation's clip_denoised)


def ddim_timesteps(T: int, steps: int, spacing: str = "linspace") -> np.ndarray:
    """Descending 0-based timesteps of a `steps`-step DDIM schedule over T."""
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be in [1, T={T}], got {steps}")
    if spacing == "linspace":
        ts = np.round(np.linspace(0, T - 1, steps)).astype(np.int64)
    elif spacing == "leading":  # Song et al.: 0, k, 2k, ... with k = T // steps
        ts = np.arange(0, steps) * (T // steps)
    elif spacing == "trailing":  # Lin et al. 2024: always includes T - 1
        ts = np.round(np.arange(T, 0, -T / steps)).astype(np.int64)[::-1] - 1
    else:
        raise ValueError(f"unknown DDIM spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    return np.unique(ts)[::-1].copy()


class NoiseSource:
    """Per-image Gaussian noise: image `index` always draws from stream (seed, SAMPLE_NOISE, index)."""

    def __init__(self, seed: int, indices, shape, device):
        self.gens = [torch_generator(seed, Stream.SAMPLE_NOISE, int(i)) for i in indices]
        self.shape, self.device = tuple(shape), device

    def draw(self) -> torch.Tensor:
        # drawn on the CPU, where generators are cheap and identical on every machine
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.gens]).to(self.device)


def _eps_and_x0(model, sched: Schedule, x: torch.Tensor, t: int, clip: bool):
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    eps = model(x, tt).float()
    x0 = predict_x0_from_eps(sched, x, tt, eps)
    if clip:
        x0 = x0.clamp(-1, 1)
        # keep eps consistent with the clipped x_0 (improved-diffusion's _predict_eps_from_xstart)
        eps = (x - extract(sched.sqrt_alpha_bar, tt, x.shape) * x0) / extract(sched.sqrt_one_minus_alpha_bar, tt, x.shape)
    return tt, eps, x0


def ddpm_step(model, sched: Schedule, x: torch.Tensor, t: int, z: torch.Tensor | None, variance: str = "small", clip: bool = True):
    """One step of Ho et al. Algorithm 2: x_{t-1} = mu_theta(x_t, t) + sigma_t z (z unused at t = 0)."""
    tt, _, x0 = _eps_and_x0(model, sched, x, t, clip)
    mean = q_posterior_mean(sched, x0, x, tt)  # eq. 7 with x_0 predicted
    if t == 0:
        return mean
    if variance == "small":  # sigma^2 = beta_tilde_t, the posterior variance
        logvar = sched.posterior_log_variance_clipped
    elif variance == "large":  # sigma^2 = beta_t, with posterior_variance[1] in place of beta at t=0, as the reference code
        logvar = np.log(np.append(sched.posterior_variance[1], sched.betas[1:]))
    else:
        raise ValueError(f"unknown DDPM variance {variance!r}; allowed: {', '.join(VARIANCES)}")
    return mean + torch.exp(0.5 * extract(logvar, tt, x.shape)) * z


def ddim_step(model, sched: Schedule, x: torch.Tensor, t: int, t_prev: int, z: torch.Tensor | None, eta: float = 0.0, clip: bool = True):
    """Song et al. 2021 eq. 12: x_{t_prev} from x_t; t_prev = -1 means alpha_bar = 1 (the final step)."""
    _, eps, x0 = _eps_and_x0(model, sched, x, t, clip)
    ab = float(sched.alpha_bar[t])
    ab_prev = float(sched.alpha_bar[t_prev]) if t_prev >= 0 else 1.0
    sigma = eta * np.sqrt((1 - ab_prev) / (1 - ab)) * np.sqrt(1 - ab / ab_prev)  # eq. 16
    out = np.sqrt(ab_prev) * x0 + np.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
    return out + sigma * z if sigma > 0 else out


def sampling_steps(spec: SamplerSpec, T: int) -> list[tuple[int, int]]:
    """(t, t_prev) pairs, in order, for the chosen sampler."""
    if spec.sampler == "ddpm":
        return [(t, t - 1) for t in range(T - 1, -1, -1)]
    if spec.sampler == "ddim":
        ts = list(ddim_timesteps(T, spec.steps, spec.spacing))
        return list(zip(ts, ts[1:] + [-1]))
    raise ValueError(f"unknown sampler {spec.sampler!r}; allowed: ddpm, ddim")


@torch.no_grad()
def sample(model, sched: Schedule, spec: SamplerSpec, indices, seed: int, shape, device, frames: int = 0, progress=None):
    """Generate images `indices` (each from its own generator) -> (x_0 [N, C, H, W], trajectory).

    trajectory: list of `frames` tensors [N, C, H, W] of x_t at evenly spaced steps (empty if frames=0).
    """
    noise = NoiseSource(seed, indices, shape, device)
    x = noise.draw()  # x_T ~ N(0, I)
    steps = sampling_steps(spec, sched.T)
    keep = set(np.round(np.linspace(0, len(steps), frames)).astype(int).tolist()) if frames else set()
    traj = [x.cpu()] if 0 in keep else []
    needs_noise = spec.sampler == "ddpm" or spec.eta > 0
    for k, (t, t_prev) in enumerate(steps, start=1):
        z = noise.draw() if needs_noise and t > 0 else None
        if spec.sampler == "ddpm":
            x = ddpm_step(model, sched, x, t, z, spec.variance, spec.clip_x0)
        else:
            x = ddim_step(model, sched, x, t, t_prev, z, spec.eta, spec.clip_x0)
        if k in keep:
            traj.append(x.cpu())
        if progress is not None:
            progress.update(1)
    return x.clamp(-1, 1), traj

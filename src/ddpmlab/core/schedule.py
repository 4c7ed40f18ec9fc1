"""Noise schedules and the closed-form quantities of the forward process.

Everything here is computed once in float64 (improved-diffusion's convention) and cast
when indexed, so T=1250 cumulative products do not lose digits in float32.

Notation follows Ho et al. 2020 (DDPM):
    beta_t                       noise variance added at step t (t = 1..T, stored at index t-1)
    alpha_t     = 1 - beta_t
    alpha_bar_t = prod_{s<=t} alpha_s                       (eq. 4: q(x_t|x_0) = N(sqrt(a_bar) x_0, (1-a_bar) I))
    posterior   q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I)   (eqs. 6-7)
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from ddpmlab.core.names import SCHEDULES


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. 2020: betas linearly spaced from beta_start to beta_end, shape [T]."""
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2), shape [T]."""

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    return np.array([min(1 - f(i + 1) / f(i), max_beta) for i in range(T)], dtype=np.float64)


def make_betas(name: str, T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """The named beta schedule; ValueError naming the allowed values (params are checked by the schema first)."""
    validate_T(T)
    if name == "linear":
        if not 0 < beta_start < beta_end < 1:
            raise ValueError(f"linear schedule needs 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
        return linear_betas(T, beta_start, beta_end)
    if name == "cosine":
        return cosine_betas(T)
    raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")


def validate_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be an integer >= 1 (the number of diffusion steps), got {T!r}")
    return T


@dataclass(frozen=True)
class ScheduleConfig:
    """What defines a schedule: its name, T and (for linear) the beta range. Checkpoints store `to_dict()`."""

    name: str
    T: int
    beta_start: float
    beta_end: float

    def build(self) -> "Schedule":
        return Schedule.from_params(self.name, self.T, self.beta_start, self.beta_end)

    def to_dict(self) -> dict:
        return {"name": self.name, "T": self.T, "beta_start": self.beta_start, "beta_end": self.beta_end}

    @classmethod
    def from_dict(cls, d: dict) -> "ScheduleConfig":
        """From a checkpoint's `schedule_config`; KeyError, TypeError or ValueError when it is not one."""
        return cls(str(d["name"]), int(d["T"]), float(d["beta_start"]), float(d["beta_end"]))


@dataclass(frozen=True)
class Schedule:
    """All per-timestep coefficients of a schedule, float64 numpy arrays of shape [T].

    Index i holds timestep t = i + 1 (0-based tensors, 1-based paper).
    """

    betas: np.ndarray

    def __post_init__(self):
        b = self.betas
        if b.ndim != 1 or not np.all((b > 0) & (b < 1)):
            raise ValueError("betas must be a 1-d array with every value in (0, 1)")
        a = 1.0 - b
        ab = np.cumprod(a)
        ab_prev = np.append(1.0, ab[:-1])
        set_ = object.__setattr__
        set_(self, "alphas", a)
        set_(self, "alpha_bar", ab)
        set_(self, "alpha_bar_prev", ab_prev)
        set_(self, "sqrt_alpha_bar", np.sqrt(ab))
        set_(self, "sqrt_one_minus_alpha_bar", np.sqrt(1.0 - ab))
        # q(x_{t-1} | x_t, x_0), Ho et al. eq. 7
        set_(self, "posterior_variance", b * (1.0 - ab_prev) / (1.0 - ab))
        # beta_tilde_1 = 0: log-variance clipped to the next value, as in the reference code
        pv = self.posterior_variance
        set_(self, "posterior_log_variance_clipped", np.log(np.append(pv[1], pv[1:])) if len(b) > 1 else np.log(b))
        set_(self, "posterior_mean_coef1", b * np.sqrt(ab_prev) / (1.0 - ab))
        set_(self, "posterior_mean_coef2", (1.0 - ab_prev) * np.sqrt(a) / (1.0 - ab))

    @classmethod
    def from_params(cls, name: str, T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        return cls(make_betas(name, T, beta_start, beta_end))

    @property
    def T(self) -> int:
        return len(self.betas)

    def snr(self) -> np.ndarray:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar), shape [T]."""
        return self.alpha_bar / (1.0 - self.alpha_bar)

    def summary(self) -> dict:
        """The terminal quantities that tell whether x_T is close to N(0, I)."""
        return {
            "T": self.T,
            "alpha_bar_T": float(self.alpha_bar[-1]),
            "sqrt_alpha_bar_T": float(self.sqrt_alpha_bar[-1]),
            "terminal_snr": float(self.snr()[-1]),
        }


def extract(coef: np.ndarray | torch.Tensor, t: torch.Tensor, shape: torch.Size | tuple) -> torch.Tensor:
    """coef[t] for a batch of 0-based timesteps t [N], reshaped to broadcast over `shape` [N, ...].

    The one indexing helper: every q/p formula goes through it, in float32 on t's device.
    """
    if isinstance(coef, np.ndarray):
        coef = torch.from_numpy(coef) if t.device.type == "cpu" else _device_copy(coef, t.device)
    out = coef.to(device=t.device, dtype=torch.float32)[t]
    return out.reshape(t.shape[0], *([1] * (len(shape) - 1)))


# float32 copies of schedule arrays on accelerators, made once per (array, device; the arrays are never
# written after Schedule builds them): a host-to-device copy
# synchronises the stream, and two per training step (q_sample) kept the GPU waiting on the host. An entry
# lives as long as its array (weakref.finalize), so schedules built and dropped in a loop do not accumulate.
_DEVICE_COPIES: dict[tuple[int, str], torch.Tensor] = {}


def _device_copy(coef: np.ndarray, device: torch.device) -> torch.Tensor:
    key = (id(coef), str(device))
    hit = _DEVICE_COPIES.get(key)
    if hit is None:
        hit = _DEVICE_COPIES[key] = torch.from_numpy(coef).to(device=device, dtype=torch.float32)
        weakref.finalize(coef, _DEVICE_COPIES.pop, key, None)
    return hit


def q_sample(sched: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_0) = N(sqrt(a_bar_t) x_0, (1 - a_bar_t) I) (Ho et al. eq. 4). x0, noise: [N, C, H, W]."""
    return extract(sched.sqrt_alpha_bar, t, x0.shape) * x0 + extract(sched.sqrt_one_minus_alpha_bar, t, x0.shape) * noise


def predict_x0_from_eps(sched: Schedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_0 = (x_t - sqrt(1 - a_bar_t) eps) / sqrt(a_bar_t), the inverse of q_sample."""
    return (x_t - extract(sched.sqrt_one_minus_alpha_bar, t, x_t.shape) * eps) / extract(sched.sqrt_alpha_bar, t, x_t.shape)


def q_posterior_mean(sched: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """mu_tilde_t(x_t, x_0), Ho et al. eq. 7."""
    return extract(sched.posterior_mean_coef1, t, x_t.shape) * x0 + extract(sched.posterior_mean_coef2, t, x_t.shape) * x_t

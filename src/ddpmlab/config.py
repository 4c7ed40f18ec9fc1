"""params.yaml: loading and validation.

Each stage reads only its own section through one of the `*Config.from_params` constructors
below. Validation happens here, at stage start, so a bad value fails with a message naming
the key and the allowed values instead of a traceback from deep inside torch.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ddpmlab.errors import ParamError
from ddpmlab.diffusion.schedule import SCHEDULES, Schedule, validate_T

SAMPLERS = ("ddpm", "ddim")
VARIANCES = ("small", "large")
SPACINGS = ("linspace", "leading", "trailing")  # DDIM timestep spacing (see diffusion.ddim_timesteps)
SOURCES = ("pypi", "url", "folder")
SQUARE_MODES = ("pad", "crop")
DEVICES = ("auto", "cpu", "cuda")


class _ParamsLoader(yaml.SafeLoader):
    """YAML 1.1 (PyYAML) reads `1e-07` as a string, yet `dvc exp run -S train.lr=0.0000001` writes small
    floats exactly that way (DVC itself reads YAML 1.2). Resolve them as floats, as DVC does."""


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the stage from the repository root")
    with path.open() as f:
        params = yaml.load(f, Loader=_ParamsLoader) or {}
    if not isinstance(params, dict):
        raise ParamError("<top level>", type(params).__name__, "a mapping of sections")
    return params


def get(params: dict, dotted: str):
    """params['a']['b'] for 'a.b'; a missing key raises ParamError naming it."""
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamError(dotted, "<missing>", "the key must be present in params.yaml (see the README)")
        node = node[part]
    return node


def _int(params, key, lo=None, hi=None, what=""):
    v = get(params, key)
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = " and ".join(s for s in ((f">= {lo}" if lo is not None else ""), (f"<= {hi}" if hi is not None else "")) if s)
        raise ParamError(key, v, f"an integer {bounds}{what}".rstrip())
    return v


def _float(params, key, lo=None, hi=None, lo_open=False, hi_open=False, what=""):
    v = get(params, key)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if ok:
        v = float(v)
        ok = (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{')' if hi_open else ']'}"
        raise ParamError(key, get(params, key), f"a number in {interval}{what}")
    return v


def _choice(params, key, choices):
    v = get(params, key)
    if v not in choices:
        raise ParamError(key, v, f"one of {', '.join(map(str, choices))}")
    return v


def _bool(params, key):
    v = get(params, key)
    if not isinstance(v, bool):
        raise ParamError(key, v, "true or false")
    return v


def _int_list(params, key, lo=None, min_len=0):
    v = get(params, key)
    if not isinstance(v, list) or len(v) < min_len or any(isinstance(x, bool) or not isinstance(x, int) or (lo is not None and x < lo) for x in v):
        raise ParamError(key, v, f"a list of at least {min_len} integers" + (f" >= {lo}" if lo is not None else ""))
    return list(v)


def fingerprint(obj) -> str:
    """A stable short hash of a JSON-able object (used to key checkpoints and caches)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ScheduleConfig:
    name: str
    T: int
    beta_start: float
    beta_end: float

    @classmethod
    def from_params(cls, p: dict) -> "ScheduleConfig":
        T = validate_T(get(p, "T"))
        cfg = cls(
            name=_choice(p, "schedule.name", SCHEDULES),
            T=T,
            beta_start=_float(p, "schedule.beta_start", 0, 1, lo_open=True, hi_open=True),
            beta_end=_float(p, "schedule.beta_end", 0, 1, lo_open=True, hi_open=True),
        )
        cfg.build()  # raises for beta_start >= beta_end
        return cfg

    def build(self) -> Schedule:
        return Schedule.from_params(self.name, self.T, self.beta_start, self.beta_end)


@dataclass(frozen=True)
class ModelConfig:
    """U-Net architecture. Stored inside every checkpoint so sampling rebuilds the model from it alone."""

    image_size: int
    in_channels: int = 3
    ch: int = 32
    ch_mult: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (8,)
    dropout: float = 0.0
    norm_groups: int = 8

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        down = 2 ** (len(self.ch_mult) - 1)
        if self.image_size % down:
            raise ParamError(
                "prepare.image_size",
                self.image_size,
                f"a multiple of {down} (the U-Net downsamples by 2**(len(model.ch_mult)-1) = {down}); "
                f"e.g. {max(down, self.image_size - self.image_size % down)}",
            )
        for m in self.ch_mult:
            if (self.ch * m) % self.norm_groups:
                raise ParamError("model.norm_groups", self.norm_groups, f"a divisor of every width ch*mult = {[self.ch * x for x in self.ch_mult]}")

    @classmethod
    def from_params(cls, p: dict) -> "ModelConfig":
        return cls(
            image_size=_int(p, "prepare.image_size", lo=8),
            ch=_int(p, "model.ch", lo=1),
            ch_mult=_int_list(p, "model.ch_mult", lo=1, min_len=1),
            num_res_blocks=_int(p, "model.num_res_blocks", lo=1),
            attn_resolutions=_int_list(p, "model.attn_resolutions", lo=1),
            dropout=_float(p, "model.dropout", 0, 1, hi_open=True),
            norm_groups=_int(p, "model.norm_groups", lo=1),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"], d["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        return d


@dataclass(frozen=True)
class TrainConfig:
    device: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    ema_decay: float
    hflip: bool
    val_every: int
    val_draws: int
    checkpoint_every: int
    seed: int
    bf16: bool = True
    compile: bool = False
    processes: int = 1

    @classmethod
    def from_params(cls, p: dict) -> "TrainConfig":
        return cls(
            device=_choice(p, "train.device", DEVICES),
            epochs=_int(p, "train.epochs", lo=1),
            batch_size=_int(p, "train.batch_size", lo=1),
            lr=_float(p, "train.lr", 0, 1, lo_open=True),
            weight_decay=_float(p, "train.weight_decay", 0, None),
            warmup_steps=_int(p, "train.warmup_steps", lo=0),
            grad_clip=_float(p, "train.grad_clip", 0, None),
            ema_decay=_float(p, "train.ema_decay", 0, 1, hi_open=True),
            hflip=_bool(p, "train.hflip"),
            val_every=_int(p, "train.val_every", lo=1),
            val_draws=_int(p, "train.val_draws", lo=1),
            checkpoint_every=_int(p, "train.checkpoint_every", lo=1),
            seed=_int(p, "seed"),
            bf16=_bool(p, "train.bf16"),
            compile=_bool(p, "train.compile"),
            processes=_int(p, "train.processes", lo=1),
        )


@dataclass(frozen=True)
class SampleConfig:
    sampler: str
    steps: int
    eta: float
    variance: str
    spacing: str
    n_samples: int
    batch_size: int
    trajectory_frames: int
    seed: int
    compile: bool = False

    @classmethod
    def from_params(cls, p: dict) -> "SampleConfig":
        T = validate_T(get(p, "T"))
        return cls(
            sampler=_choice(p, "sample.sampler", SAMPLERS),
            steps=_int(p, "sample.steps", lo=1, hi=T, what=f" (at most T = {T})"),
            eta=_float(p, "sample.eta", 0, None),
            variance=_choice(p, "sample.variance", VARIANCES),
            spacing=_choice(p, "sample.spacing", SPACINGS),
            n_samples=_int(p, "sample.n_samples", lo=2),
            batch_size=_int(p, "sample.batch_size", lo=1),
            trajectory_frames=_int(p, "sample.trajectory_frames", lo=2),
            seed=_int(p, "seed"),
            compile=_bool(p, "sample.compile"),
        )


@dataclass(frozen=True)
class ResidualsConfig:
    t_bins: int
    draws_per_bin: int
    max_ks: float
    max_abs_excess_kurtosis: float
    dispersion_range: tuple
    spike_ratio_max: float
    seed: int

    @classmethod
    def from_params(cls, p: dict) -> "ResidualsConfig":
        T = validate_T(get(p, "T"))
        dr = get(p, "residuals.dispersion_range")
        if not (isinstance(dr, list) and len(dr) == 2 and all(isinstance(x, (int, float)) for x in dr) and 0 < dr[0] < 1 < dr[1]):
            raise ParamError("residuals.dispersion_range", dr, "[lo, hi] with 0 < lo < 1 < hi")
        return cls(
            t_bins=_int(p, "residuals.t_bins", lo=1, hi=T, what=f" (at most T = {T})"),
            draws_per_bin=_int(p, "residuals.draws_per_bin", lo=1),
            max_ks=_float(p, "residuals.max_ks", 0, 1, lo_open=True),
            max_abs_excess_kurtosis=_float(p, "residuals.max_abs_excess_kurtosis", 0, None, lo_open=True),
            dispersion_range=(float(dr[0]), float(dr[1])),
            spike_ratio_max=_float(p, "residuals.spike_ratio_max", 1, None),
            seed=_int(p, "seed"),
        )

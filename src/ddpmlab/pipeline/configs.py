"""From validated params to the core's configs: one mapper per concept, the only place the two meet."""

from __future__ import annotations

from ddpmlab.core.checkpoint import CheckpointError, CheckpointMismatch
from ddpmlab.core.sampling import SamplerSpec
from ddpmlab.core.schedule import ScheduleConfig
from ddpmlab.core.train_config import TrainConfig, TrainSetup
from ddpmlab.core.unet import UNetConfig
from ddpmlab.pipeline.schema import ModelParams, Params, SampleParams, TrainParams


def unet_config(m: ModelParams, image_size: int, in_channels: int) -> UNetConfig:
    """model.* plus the prepared images' side and channel count."""
    return UNetConfig(image_size, in_channels, m.ch, tuple(m.ch_mult), m.num_res_blocks, tuple(m.attn_resolutions), m.dropout, m.norm_groups)


def schedule_config(P: Params) -> ScheduleConfig:
    """T and schedule.{name, beta_start, beta_end}."""
    return ScheduleConfig(P.schedule.name, P.T, P.schedule.beta_start, P.schedule.beta_end)


def train_config(t: TrainParams) -> TrainConfig:
    return TrainConfig(**t.model_dump())


def sampler_spec(s: SampleParams) -> SamplerSpec:
    return SamplerSpec(s.sampler, s.steps, s.eta, s.variance, s.spacing)


def check_checkpoint(P: Params, ckpt: dict, where: str, sampling: bool = True) -> None:
    """The checkpoint is what the network learned, so it wins: CheckpointMismatch (one line) when params.yaml's
    T or schedule differ from those it was trained with (params edited without retraining), or when
    `sampling` and sample.guidance asks for an autoguidance network it does not hold."""
    stored, want = ckpt.get("schedule_config") if isinstance(ckpt, dict) else None, schedule_config(P).to_dict()
    if not isinstance(stored, dict):
        raise CheckpointError(f"{where} holds no schedule_config: not a ddpmlab checkpoint; retrain it (`dvc repro`)")
    for key in ("T", "name") + (("beta_start", "beta_end") if want["name"] == "linear" else ()):
        if stored.get(key) != want[key]:
            pkey = "T" if key == "T" else f"schedule.{key}"
            raise CheckpointMismatch(f"params.yaml {pkey} = {want[key]!r} but {where} was trained with {stored.get(key)!r}: "
                                     "rerun training (`dvc repro`) or set the parameter back")
    if sampling and P.sample.guidance != 1 and "ema_guide" not in ckpt:
        raise CheckpointMismatch(f"sample.guidance = {P.sample.guidance:g} needs the checkpoint's autoguidance network, and {where} "
                                 "has none: train with train.guide_fraction > 0 (e.g. 0.25), or set sample.guidance: 1")


def train_setup(P: Params, in_channels: int) -> TrainSetup:
    """Everything that defines a training run; `in_channels` is the prepared data's channel count."""
    return TrainSetup(unet_config(P.model, P.prepare.image_size, in_channels), schedule_config(P), train_config(P.train), P.seed)

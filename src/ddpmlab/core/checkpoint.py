"""Checkpoint files: written atomically and byte-deterministically, read as data only, self-describing.

A checkpoint is a dict of tensors and plain data. It carries the network's shape (`model_config`,
a `UNetConfig` as a dict) and the noise schedule (`schedule_config`: name, T, beta_start,
beta_end), so sampling and evaluation rebuild both from the file alone.

Separate from the resumable-state logic (core.state) so that the stages that only *read* a
model (residuals, sample, sweep) do not depend on the training code or the resume key.
"""

from __future__ import annotations

import io
import pickle
import sys
import zipfile
from pathlib import Path

import torch

from ddpmlab.core.errors import DataError, UserError
from ddpmlab.core.files import write_bytes
from ddpmlab.core.sampling import AutoGuided, as_eps_predictor
from ddpmlab.core.schedule import Schedule, ScheduleConfig
from ddpmlab.core.unet import UNet, UNetConfig

CHECKPOINT_FORMAT = 2  # 2: UNetConfig model_config, no timings in history, resume_key


class CheckpointError(DataError):
    """A checkpoint file cannot be used; str(e) is one line naming the file and what to do."""


def canonical(obj):
    """Plain data (dicts, lists, tuples, str, numbers) rebuilt so that its pickle depends on its value only.

    pickle writes an object seen before as a back-reference, so the bytes depend on which equal strings
    happen to be the same object: a history reloaded from a checkpoint and one built in this process
    would pickle differently. Interning every string makes equal strings identical, always.
    """
    if isinstance(obj, dict):
        return {canonical(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(canonical(v) for v in obj)
    if isinstance(obj, str):
        return sys.intern(str(obj))
    return obj


def checkpoint_bytes(obj: dict) -> bytes:
    """torch.save into memory. The zip's member names then start with 'archive/' whatever the file is
    called, and torch writes fixed zip timestamps, so equal objects give equal bytes."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_atomic(obj: dict, path: Path) -> None:
    """Write a temporary file, fsync, then rename: a kill (or power loss) mid-write leaves the previous
    file intact, and a reader never sees half a checkpoint."""
    write_bytes(path, checkpoint_bytes(obj))


class CheckpointMismatch(UserError, ValueError):
    """A setting cannot be used with this checkpoint (one line)."""


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """The checkpoint's dict; CheckpointError (one line) if the file is missing, truncated, corrupt,
    or holds anything but tensors and plain data (weights_only=True: loading never runs pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; train a model first")
    # torch writes zip archives; anything else would go to torch's legacy reader and a confusing message
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: not a complete torch zip archive)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt, or holds objects other than tensors and plain data, "
                              "whose loading could run code: refused)") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError, IndexError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a ddpmlab checkpoint (holds a {type(obj).__name__}, not a dict)")
    return obj


def build_model_from_checkpoint(ckpt: dict, device="cpu", key: str = "ema") -> tuple[torch.nn.Module, Schedule, dict]:
    """Rebuild the network (weights `key`, eval mode, on `device`) and the schedule from a checkpoint alone.
    The network is returned as an epsilon-predictor: a v-network (train_config prediction v) is wrapped in
    EpsFromV, so samplers and the residual check work unchanged."""
    try:
        cfg = UNetConfig.from_dict(ckpt["model_config"])
        sched = ScheduleConfig.from_dict(ckpt["schedule_config"]).build()
        model = UNet(cfg)
        model.load_state_dict(ckpt[key])
        # checkpoints from before v-prediction have no such key: eps
        net = as_eps_predictor(model.to(device).eval(), sched, ckpt.get("train_config", {}).get("prediction", "eps"))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint lacks or mismatches its model description ({type(e).__name__}: {str(e)[:120]}); retrain it") from None
    return net, sched, ckpt


def build_sampler_from_checkpoint(ckpt: dict, device="cpu", guidance: float = 1.0) -> tuple[torch.nn.Module, Schedule, dict]:
    """The epsilon-predictor the samplers run: the EMA network alone (guidance 1), or autoguided by the checkpoint's
    early EMA ("ema_guide", kept when training keeps a guide) with weight `guidance` (sampling.AutoGuided)."""
    net, sched, ckpt = build_model_from_checkpoint(ckpt, device)
    if guidance == 1:
        return net, sched, ckpt
    if "ema_guide" not in ckpt:
        raise CheckpointError(f"guidance {guidance:g} needs the checkpoint's autoguidance network (ema_guide), and this one has none: "
                              "train keeping an early EMA, or sample with guidance 1")
    guide, _, _ = build_model_from_checkpoint(ckpt, device, key="ema_guide")
    return AutoGuided(net, guide, guidance), sched, ckpt

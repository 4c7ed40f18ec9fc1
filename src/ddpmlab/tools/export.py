"""Export a trained checkpoint to another library's format.

    ddpmlab export diffusers exported/ --model models/model.pt
    python -c "from diffusers import DDPMPipeline; DDPMPipeline.from_pretrained('exported')(batch_size=4).images[0].save('a.png')"

`diffusers DIR` writes a folder that diffusers' `DDPMPipeline.from_pretrained(DIR)` and `DDIMPipeline.from_pretrained(DIR)`
load offline: `unet/` (a `UNet2DModel` holding the checkpoint's EMA weights, safetensors) and `scheduler/` (a
`DDPMScheduler` with the checkpoint's own betas, T, prediction type and x_0 clipping). The U-Net maps block for
block (residual blocks, single-head attention at the same resolutions, the sinusoidal embedding with sin before
cos); after mapping, both networks run on the same inputs and the export is refused unless their outputs agree
to 1e-4. What does not map is refused with one line: autoguidance (diffusers' pipelines run one network).

DDIM in diffusers steps from t to t - T // steps: with --spacing leading or trailing and steps dividing T it
takes exactly the steps of `ddpmlab sample --sampler ddim --spacing <the same>`; diffusers' `linspace` is not
ours. DDIM there clips x_0 and keeps the unclipped epsilon unless the call passes `use_clipped_model_output=True`
(ddpmlab uses the clipped one). Needs diffusers (`pip install diffusers`). DIR is replaced as a whole, never left
half written; a DIR that holds something other than an earlier export is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ddpmlab.core.checkpoint import build_model_from_checkpoint, load_checkpoint
from ddpmlab.core.errors import UserError
from ddpmlab.core.files import write_text
from ddpmlab.core.names import SPACINGS, VARIANCES
from ddpmlab.core.sampling import EpsFromV
from ddpmlab.core.schedule import ScheduleConfig
from ddpmlab.core.streams import Stream, torch_generator
from ddpmlab.core.unet import (
    AttnBlock,
    Downsample,
    ResBlock,
    UNet,
    UNetConfig,
    Upsample,
)
from ddpmlab.pipeline.command import command

RECORD = "ddpmlab_export.json"  # written into DIR: what was exported; marks DIR as replaceable by the next export
TOLERANCE = 1e-4                # largest |ours - theirs| allowed on the probe inputs (float32)
SCHEDULER_PREDICTION = {"eps": "epsilon", "v": "v_prediction"}
SCHEDULER_VARIANCE = {"small": "fixed_small", "large": "fixed_large"}


class ExportError(UserError):
    """The checkpoint cannot be exported as asked (one line)."""


def unet2d_config(cfg: UNetConfig) -> dict:
    """diffusers UNet2DModel keyword arguments for the same network."""
    res, down = cfg.image_size, []
    for level in range(len(cfg.ch_mult)):
        down.append("AttnDownBlock2D" if res in cfg.attn_resolutions else "DownBlock2D")
        if level < len(cfg.ch_mult) - 1:
            res //= 2
    return dict(sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.in_channels, center_input_sample=False,
                time_embedding_type="positional", flip_sin_to_cos=False, freq_shift=0,  # ours: [sin, cos], exponent / half
                down_block_types=tuple(down), up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)),
                block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult), layers_per_block=cfg.num_res_blocks,
                mid_block_scale_factor=1.0, downsample_padding=1, downsample_type="conv", upsample_type="conv", dropout=cfg.dropout,
                act_fn="silu", attention_head_dim=None, norm_num_groups=cfg.norm_groups, norm_eps=1e-5, resnet_time_scale_shift="default",
                add_attention=True)


def _resblock(ours: dict, p: str, q: str, out: dict) -> None:
    names = {"norm1": "norm1", "conv1": "conv1", "temb": "time_emb_proj", "norm2": "norm2", "conv2": "conv2", "skip": "conv_shortcut"}
    for k, v in ours.items():
        if k.startswith(p):
            head, _, tail = k[len(p):].partition(".")
            out[f"{q}{names[head]}.{tail}"] = v


def _attn(ours: dict, p: str, q: str, out: dict) -> None:
    c = ours[p + "proj.weight"].shape[0]
    w, b = ours[p + "qkv.weight"][:, :, 0, 0], ours[p + "qkv.bias"]  # output channels: q, then k, then v
    for i, name in enumerate(("to_q", "to_k", "to_v")):
        out[f"{q}{name}.weight"], out[f"{q}{name}.bias"] = w[i * c:(i + 1) * c], b[i * c:(i + 1) * c]
    out[q + "to_out.0.weight"], out[q + "to_out.0.bias"] = ours[p + "proj.weight"][:, :, 0, 0], ours[p + "proj.bias"]
    out[q + "group_norm.weight"], out[q + "group_norm.bias"] = ours[p + "norm.weight"], ours[p + "norm.bias"]


def map_state_dict(net: UNet, ours: dict) -> dict:
    """Our U-Net's state dict under UNet2DModel's names (walking our blocks in their order)."""
    out = {"time_embedding.linear_1.weight": ours["temb.0.weight"], "time_embedding.linear_1.bias": ours["temb.0.bias"],
           "time_embedding.linear_2.weight": ours["temb.2.weight"], "time_embedding.linear_2.bias": ours["temb.2.bias"],
           "conv_in.weight": ours["conv_in.weight"], "conv_in.bias": ours["conv_in.bias"],
           "conv_norm_out.weight": ours["norm_out.weight"], "conv_norm_out.bias": ours["norm_out.bias"],
           "conv_out.weight": ours["conv_out.weight"], "conv_out.bias": ours["conv_out.bias"]}

    def walk(blocks, prefix: str, side: str, sampler: type, sampler_name: str):
        level, j = 0, 0
        for b, block in enumerate(blocks):
            if isinstance(block[0], sampler):
                out[f"{side}.{level}.{sampler_name}.0.conv.weight"] = ours[f"{prefix}.{b}.0.conv.weight"]
                out[f"{side}.{level}.{sampler_name}.0.conv.bias"] = ours[f"{prefix}.{b}.0.conv.bias"]
                level, j = level + 1, 0
                continue
            for k, layer in enumerate(block):
                if isinstance(layer, ResBlock):
                    _resblock(ours, f"{prefix}.{b}.{k}.", f"{side}.{level}.resnets.{j}.", out)
                elif isinstance(layer, AttnBlock):
                    _attn(ours, f"{prefix}.{b}.{k}.", f"{side}.{level}.attentions.{j}.", out)
            j += 1

    walk(net.down, "down", "down_blocks", Downsample, "downsamplers")
    walk(net.up, "up", "up_blocks", Upsample, "upsamplers")
    _resblock(ours, "mid.0.", "mid_block.resnets.0.", out)
    _attn(ours, "mid.1.", "mid_block.attentions.0.", out)
    _resblock(ours, "mid.2.", "mid_block.resnets.1.", out)
    return out


def scheduler_config(sc: ScheduleConfig, prediction: str, variance: str, spacing: str, clip: bool) -> dict:
    betas = sc.build().betas
    return dict(num_train_timesteps=sc.T, beta_start=sc.beta_start, beta_end=sc.beta_end,
                beta_schedule="linear" if sc.name == "linear" else "squaredcos_cap_v2",
                trained_betas=[float(b) for b in betas],  # exactly ours (diffusers rounds them to float32, as it does its own)
                variance_type=SCHEDULER_VARIANCE[variance], clip_sample=clip, clip_sample_range=1.0,
                prediction_type=SCHEDULER_PREDICTION[prediction], timestep_spacing=spacing, steps_offset=0)


def probe_difference(ours: UNet, theirs, cfg: UNetConfig, T: int) -> float:
    """max |ours(x, t) - theirs(x, t)| over a fixed batch of inputs and timesteps spread over [0, T-1]."""
    g = torch_generator(0, Stream.EXPORT_PROBE)
    x = torch.randn(4, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.tensor([0, T // 3, (2 * T) // 3, T - 1])
    with torch.no_grad():
        return float((ours(x, t) - theirs(x, t).sample).abs().max())


def replace_dir(src: Path, dst: Path) -> None:
    """Put the finished folder `src` at `dst`: an earlier export there is swapped out whole, anything else refused."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_diffusers(model_path: Path, out: Path, variance: str = "small", spacing: str = "leading", clip: bool = True) -> dict:
    """Write `out` (see the module's doc); returns the record written beside the weights."""
    try:
        import diffusers
        from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    except ImportError:
        raise ExportError("diffusers is not installed; pip install diffusers (then rerun)") from None
    if out.exists() and not (out.is_dir() and ((out / RECORD).is_file() or not any(out.iterdir()))):
        raise ExportError(f"{out}: exists and is not an earlier export (no {RECORD}); choose a new or empty folder")
    net, _, ckpt = build_model_from_checkpoint(load_checkpoint(model_path))  # CheckpointError (one line) if it is no model
    ours = net.net if isinstance(net, EpsFromV) else net  # the network itself: diffusers' scheduler takes v-predictions as they are
    cfg, sc = ours.cfg, ScheduleConfig.from_dict(ckpt["schedule_config"])
    prediction = ckpt.get("train_config", {}).get("prediction", "eps")
    if prediction not in SCHEDULER_PREDICTION:
        raise ExportError(f"{model_path}: prediction {prediction!r} has no diffusers scheduler equivalent (allowed: {', '.join(SCHEDULER_PREDICTION)})")
    ours.eval()
    theirs = UNet2DModel(**unet2d_config(cfg))
    mapped = map_state_dict(ours, ours.state_dict())
    missing, unexpected = theirs.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise ExportError(f"{model_path}: this U-Net does not map onto diffusers' UNet2DModel ({len(missing)} weights missing, e.g. "
                          f"{missing[:2]}; {len(unexpected)} left over, e.g. {unexpected[:2]}): not exported")
    theirs.eval()
    diff = probe_difference(ours, theirs, cfg, sc.T)
    if not diff <= TOLERANCE:
        raise ExportError(f"{model_path}: diffusers' UNet2DModel with these weights differs from ours by {diff:.2e} (> {TOLERANCE:g}): not exported")
    scheduler = DDPMScheduler(**scheduler_config(sc, prediction, variance, spacing, clip))
    record = {"source": str(model_path), "epoch": ckpt.get("epoch"), "model_config": cfg.to_dict(), "schedule_config": sc.to_dict(),
              "prediction": prediction, "variance": variance, "spacing": spacing, "clip_x0": clip, "network": "ema",
              "max_abs_difference_on_probe": diff, "diffusers_version": diffusers.__version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        DDPMPipeline(unet=theirs, scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)
        write_text(tmp / RECORD, json.dumps(record, indent=1) + "\n")
        replace_dir(tmp, out)
    except OSError as e:
        raise ExportError(f"{out}: cannot write the export ({e.strerror or e}); nothing was changed there") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


@command("export")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ddpmlab export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="format", required=True, metavar="FORMAT")
    d = sub.add_parser("diffusers", help="a folder DDPMPipeline.from_pretrained / DDIMPipeline.from_pretrained load",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("dir", type=Path, help="the folder to write (replaced whole if it holds an earlier export)")
    d.add_argument("--model", type=Path, default=Path("models/model.pt"), help="a checkpoint of the train stage (default: models/model.pt)")
    d.add_argument("--variance", choices=VARIANCES, default="small", help="DDPM reverse variance: small = fixed_small (default), large = fixed_large")
    d.add_argument("--spacing", choices=SPACINGS, default="leading", help="the scheduler's timestep_spacing (default leading; see above)")
    d.add_argument("--no-clip", action="store_true", help="scheduler without x_0 clipping (clip_sample false)")
    d.add_argument("--guidance", type=float, default=1.0, help="must be 1: diffusers' pipelines run one network, so autoguidance cannot be exported")
    args = ap.parse_args(argv)
    if args.guidance != 1:
        raise ExportError(f"--guidance {args.guidance:g}: autoguidance needs two networks and diffusers' DDPM/DDIM pipelines run one; "
                          "export with --guidance 1 (the EMA network alone)")
    rec = export_diffusers(args.model, args.dir, args.variance, args.spacing, not args.no_clip)
    print(f"export: {args.dir} (UNet2DModel + DDPMScheduler, T = {rec['schedule_config']['T']}, {rec['schedule_config']['name']}, "
          f"prediction {rec['prediction']}; max |difference| on the probe {rec['max_abs_difference_on_probe']:.1e})")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

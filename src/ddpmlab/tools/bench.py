"""Training and sampling speed, side by side, on the current device.

    ddpmlab bench                                # DDPM CIFAR-10 preset; batch 128 on CUDA, 8 on CPU
    ddpmlab bench --preset default --batch 32    # params.yaml's network (read from --params)

Times, for the same architecture and batch:
  (a) this project's training step (forward, loss, backward, optimizer, EMA), with its device
      choices (CUDA: bf16 autocast, channels_last, fused AdamW, foreach EMA, optional compile);
  (b) a plain fp32 eager PyTorch reference of the same network (a straight port of the seed
      notebooks: NCHW, for-loop Adam, per-tensor EMA);
  (c) diffusers' UNet2DModel with identical widths and blocks, fp32 and bf16, when importable;
and the denoiser's forward throughput (sampling). Prints images/s, the ratios (a)/(b) and
(a)/(c), FLOPs per image and the achieved TFLOP/s.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddpmlab.core.device import FastDenoiser, resolve_device
from ddpmlab.core.names import PRECISIONS
from ddpmlab.core.runtime import make_runtime
from ddpmlab.core.schedule import Schedule, linear_betas, q_sample
from ddpmlab.core.training import make_networks, train_step
from ddpmlab.core.unet import UNet, UNetConfig, count_params
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.configs import train_config, train_setup
from ddpmlab.pipeline.io import write_json
from ddpmlab.pipeline.schema import TrainParams, load_params

PRESETS = {
    # Ho et al. 2020 CIFAR-10: 35.7M parameters
    "cifar10": UNetConfig(32, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1, norm_groups=32),
    # the GPU preset's network (docs/experiments.md) at 64x64
    "pokemon64": UNetConfig(64, ch=64, ch_mult=(1, 2, 4, 8), num_res_blocks=2, attn_resolutions=(16, 8), dropout=0.1, norm_groups=32),
}
PRESET_NAMES = ("cifar10", "default", "pokemon64")  # default: params.yaml's network, read from --params


def preset(name: str, params: Path = Path("params.yaml")) -> UNetConfig:
    """The network of a preset; "default" is exactly what the train stage builds from `params` (RGB)."""
    if name == "default":
        return train_setup(load_params(params), in_channels=3).model
    return PRESETS[name]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, steps: int, warmup: int, device) -> float:
    """Seconds per call, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def flops_per_image(model, cfg: UNetConfig, device, train: bool) -> float:
    """FLOPs of one image's forward (and backward when train) by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    t = torch.tensor([1, 500], device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(x, t)
        if train:
            out.float().pow(2).mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


# ---------------------------------------------------------------------------------------------
# (a) the project's step


def project_step(cfg: UNetConfig, batch: int, device, compile_: bool, channels_last: bool = True):
    """Ho et al.'s CIFAR-10 training (lr 2e-4, EMA 0.9999, eps, flips) at `batch`, built as train() builds it."""
    tc = train_config(TrainParams(device=device.type, epochs=1, batch_size=batch, lr=2e-4, weight_decay=0.0, warmup_steps=0, grad_clip=1.0,
                                  ema_decay=0.9999, prediction="eps", min_snr_gamma=0.0, hflip=True, val_every=1, val_draws=1,
                                  checkpoint_every=1, bf16=True, compile=compile_, processes=1))
    rt = make_runtime(tc.device, tc.bf16)
    if not channels_last:
        rt = dataclasses.replace(rt, channels_last=False)
    model, ema, opt = make_networks(cfg, tc, rt)
    net = torch.compile(model) if compile_ else model
    xs = rt.layout(torch.rand(max(batch, 256), cfg.in_channels, cfg.image_size, cfg.image_size, device=device) * 2 - 1)
    sched = Schedule(linear_betas(1000))
    state = {"step": 0}
    idx = torch.arange(batch)

    def step():
        train_step(net, model, ema, opt, sched, xs, idx, state["step"], tc, 0, rt)
        state["step"] += 1

    return model, step


def sampling_forward(model, cfg: UNetConfig, device, compile_: bool, precision: str, channels_last: bool):
    """The sample stage's denoiser (device.FastDenoiser) over `model`: a callable of the batch size."""
    den = FastDenoiser(model.eval(), device, compile=compile_, precision=precision, channels_last=channels_last)

    @torch.inference_mode()
    def forward(n):
        x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
        t = torch.randint(0, 1000, (n,), device=device)
        return den(x, t)

    return forward


# ---------------------------------------------------------------------------------------------
# (b) the plain fp32 eager reference


def reference_step(cfg: UNetConfig, batch: int, device):
    torch.manual_seed(0)
    model = UNet(cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, foreach=False)
    sched = Schedule(linear_betas(1000))
    data = torch.rand(batch, cfg.in_channels, cfg.image_size, cfg.image_size, device=device) * 2 - 1

    def step():
        t = torch.randint(0, 1000, (batch,), device=device)
        noise = torch.randn_like(data)
        loss = F.mse_loss(model(q_sample(sched, data, t, noise), t), noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.mul_(0.9999).add_(p, alpha=1e-4)

    @torch.no_grad()
    def forward(n):
        return model(torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, device=device), torch.randint(0, 1000, (n,), device=device))

    return step, forward


# ---------------------------------------------------------------------------------------------
# (c) diffusers, when installed


def diffusers_step(cfg: UNetConfig, batch: int, device, bf16: bool):
    from diffusers import UNet2DModel

    res, down, up = cfg.image_size, [], []
    for level in range(len(cfg.ch_mult)):
        down.append("AttnDownBlock2D" if res in cfg.attn_resolutions else "DownBlock2D")
        res //= 2 if level < len(cfg.ch_mult) - 1 else 1
    up = [b.replace("Down", "Up") for b in reversed(down)]
    model = UNet2DModel(sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.in_channels, block_out_channels=[cfg.ch * m for m in cfg.ch_mult],
                        layers_per_block=cfg.num_res_blocks, down_block_types=down, up_block_types=up, norm_num_groups=cfg.norm_groups,
                        dropout=cfg.dropout, attention_head_dim=None).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    data = torch.rand(batch, cfg.in_channels, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    sched = Schedule(linear_betas(1000))
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        t = torch.randint(0, 1000, (batch,), device=device)
        noise = torch.randn_like(data)
        with ctx:
            pred = model(q_sample(sched, data, t, noise), t).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return model, step


# ---------------------------------------------------------------------------------------------


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@command("bench")
def main(argv=None) -> dict:
    ap = stage_parser(__doc__, device=True, prog="ddpmlab bench", formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=PRESET_NAMES, default="cifar10", help="default: the --params file's network")
    ap.add_argument("--batch", type=int, help="training batch (default: 128 on CUDA, 8 on CPU)")
    ap.add_argument("--forward-batch", type=int, help="denoiser forward batch (default: 256 on CUDA, 16 on CPU)")
    ap.add_argument("--steps", type=int, help="timed steps (default: 20 on CUDA, 3 on CPU)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default: 5 on CUDA, 1 on CPU)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the project's network")
    ap.add_argument("--no-diffusers", action="store_true", help="skip (c) even if diffusers is installed")
    ap.add_argument("--variants", action="store_true",
                    help="CUDA: also time the eager sampling forward in each precision and layout (with --compile too) "
                         "and, without --compile, the training step without channels_last")
    ap.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (128 if cuda else 8)
    fbatch = args.forward_batch or (256 if cuda else 16)
    steps = args.steps or (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    cfg = preset(args.preset, args.params)

    model, step = project_step(cfg, batch, device, args.compile)
    ref_step, ref_forward = reference_step(cfg, batch, device)
    train_flops = flops_per_image(UNet(cfg).to(device), cfg, device, train=True)
    fwd_flops = flops_per_image(UNet(cfg).to(device), cfg, device, train=False)
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    print(f"preset {args.preset}: {cfg.image_size}x{cfg.image_size}, {count_params(model) / 1e6:.1f}M params, "
          f"train batch {batch}, forward batch {fbatch}, {steps} timed steps after {warmup} warm-up")
    print(f"FLOPs per image: training step {train_flops / 1e9:.2f} GFLOP, forward {fwd_flops / 1e9:.2f} GFLOP\n")

    rows = []
    print(f"{'variant':44s} {'img/s':>10s} {'TFLOP/s':>9s}", flush=True)

    def add(name, sec, n, flops):
        """One row, printed as soon as it is measured: a run stopped at a time limit still shows what it timed."""
        ips = n / sec
        rows.append({"name": name, "img_per_s": ips, "tflops": ips * flops / 1e12})
        print(f"{name:44s} {ips:10.1f} {ips * flops / 1e12:9.3f}", flush=True)

    # the rows the targets name first; each new shape/layout costs cuDNN autotuning on its first calls
    add("(a) project training step", timeit(step, steps, warmup, device), batch, train_flops)
    add("(b) plain fp32 eager reference step", timeit(ref_step, steps, warmup, device), batch, train_flops)
    # the forward rows: the sample stage's denoiser (FastDenoiser, its defaults), the fp32 reference, the variants
    fwd = sampling_forward(model, cfg, device, args.compile, PRECISIONS[0], True)
    add("project denoiser forward (sampling)", timeit(lambda: fwd(fbatch), steps, warmup, device), fbatch, fwd_flops)
    add("reference fp32 denoiser forward", timeit(lambda: ref_forward(fbatch), steps, warmup, device), fbatch, fwd_flops)
    if args.variants and cuda:
        # eager forwards cost no compiling, so they are timed under --compile too (the eager bf16 forward vs fp32 target)
        combos = [(p, cl) for p in PRECISIONS for cl in (True, False)]
        for precision, cl in combos if args.compile else combos[1:]:
            fwd = sampling_forward(model, cfg, device, False, precision, cl)
            add(f"  forward variant: {precision}, {'channels_last' if cl else 'NCHW'}, eager", timeit(lambda: fwd(fbatch), steps, warmup, device),
                fbatch, fwd_flops)
    try:
        if args.no_diffusers:
            raise ImportError
        import diffusers  # noqa: F401

        for bf16 in (False, True):
            if bf16 and not cuda:
                continue
            dmodel, dstep = diffusers_step(cfg, batch, device, bf16)
            if not bf16:
                print(f"(c) diffusers UNet2DModel with the same widths and blocks: {count_params(dmodel) / 1e6:.1f}M params")
            add(f"(c) diffusers UNet2DModel {'bf16' if bf16 else 'fp32'} step", timeit(dstep, steps, warmup, device), batch, train_flops)
            del dmodel, dstep
    except ImportError:
        print("(c) diffusers not importable: skipped (pip install diffusers to compare)")
    if args.variants and cuda and not args.compile:
        _, nchw_step = project_step(cfg, batch, device, args.compile, channels_last=False)
        add("(a') project training step, NCHW", timeit(nchw_step, steps, warmup, device), batch, train_flops)

    a = rows[0]["img_per_s"]
    print()
    for r in rows[1:]:
        if "step" in r["name"]:
            print(f"ratio (a) / {r['name'].split(' ', 1)[0]} {r['name'].split(' ', 1)[1]}: {a / r['img_per_s']:.2f}x")
    by = {r["name"]: r["img_per_s"] for r in rows}
    print(f"ratio forward project / reference: {by['project denoiser forward (sampling)'] / by['reference fp32 denoiser forward']:.2f}x")
    out = {"device": device_name(device), "torch": torch.__version__, "preset": args.preset, "compile": args.compile, "batch": batch,
           "forward_batch": fbatch, "steps": steps, "warmup": warmup, "rows": rows}
    if args.json:
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()

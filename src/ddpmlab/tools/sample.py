"""Draw images from a trained checkpoint into a folder of PNGs and/or one .npz.

    ddpmlab sample --model models/model.pt --n 100 --out-dir my_samples              # 000000.png ... 000099.png
    ddpmlab sample --model models/model.pt --n 64 --guidance 2 --npz samples.npz     # the sample stage's 64 images
    ddpmlab sample --model models/model.pt --n 1000 --sampler ddpm --out-dir ddpm --device cuda

Image i depends only on (--seed, i) and the sampler settings, as in the pipeline: the batch size never changes
it, `--n 10` gives the first ten images of `--n 1000`, and the sample stage's images are
`--seed <params seed> --guidance <sample.guidance>` with its sampler settings. The network, T and the schedule
come from the checkpoint.

An --out-dir remembers its settings (sampling.json): a rerun with the same settings makes only the images not
there yet (an interrupted run resumes, a larger --n extends); other settings are refused, so one folder never
mixes two samplers. Each PNG is written atomically (a kill leaves whole files only). At most 50,000 images per call.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ddpmlab.core.checkpoint import build_sampler_from_checkpoint, load_checkpoint
from ddpmlab.core.device import FastDenoiser, resolve_device
from ddpmlab.core.errors import UserError
from ddpmlab.core.images import to_uint8
from ddpmlab.core.names import DEVICES, SAMPLERS, SPACINGS, VARIANCES
from ddpmlab.core.sampling import SamplerSpec, sample, sampling_steps
from ddpmlab.pipeline.command import command
from ddpmlab.pipeline.io import save_image, save_npz, write_json
from ddpmlab.pipeline.schema import MAX_SAMPLES

MANIFEST = "sampling.json"


class SampleError(UserError):
    """The request cannot be carried out (one line naming the flag or the file)."""


def png_name(i: int) -> str:
    return f"{i:06d}.png"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def identity(args, model_sha: str, device: torch.device, T: int) -> dict:
    """What decides the images (besides the index): the same identity and index give the same image."""
    out = {"model_sha256": model_sha, "sampler": args.sampler, "seed": args.seed, "guidance": args.guidance, "clip_x0": not args.no_clip,
           "device": device.type}
    if args.sampler == "ddim":
        out.update(steps=args.steps, eta=args.eta, spacing=args.spacing)
    else:
        out.update(steps=T, variance=args.variance)
    return out


def check_folder(out_dir: Path, ident: dict) -> None:
    """An --out-dir is new, empty, or holds images made with exactly `ident`; SampleError otherwise."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SampleError(f"--out-dir {out_dir}: exists and is not a folder")
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        try:
            had = json.loads(manifest.read_text())["identity"]
        except (OSError, ValueError, KeyError, TypeError):
            raise SampleError(f"{manifest}: not a readable sampling record; remove the folder or choose another --out-dir") from None
        diff = sorted(k for k in set(had) | set(ident) if had.get(k) != ident.get(k))
        if diff:
            shown = ", ".join(f"{k} {had.get(k)!r} there, {ident.get(k)!r} now" for k in diff)
            raise SampleError(f"--out-dir {out_dir} holds images made with other settings ({shown}); choose another --out-dir or remove it")
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise SampleError(f"--out-dir {out_dir}: not empty and holds no {MANIFEST} (not a folder this command made); choose an empty or new folder")


def read_png(path: Path, shape: tuple) -> np.ndarray | None:
    """A PNG this command wrote, as uint8 [H, W, C]; None when it is missing or not of `shape` (then it is redrawn)."""
    try:
        with Image.open(path) as im:
            if im.format != "PNG" or im.size != (shape[1], shape[0]):
                return None
            a = np.asarray(im.convert("L" if shape[2] == 1 else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return a[..., None] if a.ndim == 2 else a


def to_png(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ddpmlab sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("models/model.pt"), help="a checkpoint of the train stage (default: models/model.pt)")
    ap.add_argument("--n", type=int, default=64, help=f"images to draw, indices 0..n-1 (default 64, at most {MAX_SAMPLES:,})")
    ap.add_argument("--out-dir", type=Path, help="write one PNG per image here (000000.png, ...)")
    ap.add_argument("--npz", type=Path, help="write all images to this .npz as images uint8 [N, H, W, C] (the sample stage's form)")
    ap.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="ddpm (Ho et al. Algorithm 2, all T steps) or ddim (default)")
    ap.add_argument("--steps", type=int, help="ddim: sampling steps, 1..T (default 50, or T when T < 50)")
    ap.add_argument("--eta", type=float, default=0.0, help="ddim: noise scale in [0, 1] (default 0: deterministic)")
    ap.add_argument("--spacing", choices=SPACINGS, default="linspace", help="ddim: timestep spacing (default linspace)")
    ap.add_argument("--variance", choices=VARIANCES, default="small", help="ddpm: small (beta_tilde, default) or large (beta)")
    ap.add_argument("--no-clip", action="store_true", help="do not clip the predicted x_0 to [-1, 1] at each step")
    ap.add_argument("--guidance", type=float, default=1.0,
                    help="autoguidance weight w in [0, 20] (default 1: the network alone; other values need a checkpoint with an early EMA)")
    ap.add_argument("--seed", type=int, default=0, help="image i draws its noise from stream (seed, i) (default 0, params.yaml's default seed)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per forward pass (does not change the images; default 64)")
    ap.add_argument("--device", default="auto", choices=DEVICES, help="where to run (default: auto, CUDA when visible)")
    ap.add_argument("--compile", action="store_true", help="CUDA: torch.compile the denoiser with CUDA graphs")
    return ap


def check_args(ap: argparse.ArgumentParser, args) -> None:
    if args.out_dir is None and args.npz is None:
        ap.error("give --out-dir DIR (PNGs), --npz FILE, or both")
    if not 1 <= args.n <= MAX_SAMPLES:
        ap.error(f"--n {args.n}: must be between 1 and {MAX_SAMPLES:,}")
    if args.batch_size < 1:
        ap.error(f"--batch-size {args.batch_size}: must be at least 1")
    if not 0 <= args.eta <= 1:
        ap.error(f"--eta {args.eta:g}: must be in [0, 1]")
    if not 0 <= args.guidance <= 20:
        ap.error(f"--guidance {args.guidance:g}: must be in [0, 20]")
    if args.seed < 0:
        ap.error(f"--seed {args.seed}: must be >= 0")


@command("sample")
def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.model)
    model, sched, ckpt = build_sampler_from_checkpoint(ckpt, device, args.guidance)
    if args.steps is None:
        args.steps = min(50, sched.T)
    if args.sampler == "ddim" and not 1 <= args.steps <= sched.T:
        raise SampleError(f"--steps {args.steps}: DDIM steps must be between 1 and the checkpoint's T = {sched.T}")
    spec = SamplerSpec(args.sampler, args.steps, args.eta, args.variance, args.spacing, clip_x0=not args.no_clip)
    mc = ckpt["model_config"]
    shape = (int(mc["in_channels"]), int(mc["image_size"]), int(mc["image_size"]))  # [C, H, W]
    hwc = (shape[1], shape[2], shape[0])
    ident = identity(args, sha256(args.model), device, sched.T)

    have: dict[int, np.ndarray | None] = {}
    if args.out_dir is not None:
        check_folder(args.out_dir, ident)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(args.out_dir / MANIFEST, {"identity": ident, "model": str(args.model)})
        for i in range(args.n):
            if (args.out_dir / png_name(i)).is_file():
                have[i] = read_png(args.out_dir / png_name(i), hwc) if args.npz is not None else np.zeros(0)
        have = {i: a for i, a in have.items() if a is not None}
    todo = [i for i in range(args.n) if i not in have]
    images = np.zeros((args.n, *hwc), np.uint8) if args.npz is not None else None
    for i, a in have.items():
        if images is not None:
            images[i] = a

    denoiser = FastDenoiser(model, device, compile=args.compile)
    n_steps = len(sampling_steps(spec, sched.T))
    batches = [todo[k:k + args.batch_size] for k in range(0, len(todo), args.batch_size)]
    if have:
        print(f"sample: {len(have)} of {args.n} images already in {args.out_dir}; drawing the other {len(todo)}")
    with tqdm(total=n_steps * len(batches), desc=f"sample {args.sampler}", unit="step") as bar:
        for idx in batches:
            x, _ = sample(denoiser, sched, spec, idx, args.seed, shape, device, progress=bar)
            batch = to_uint8(x)
            for i, image in zip(idx, batch):
                if args.out_dir is not None:
                    save_image(to_png(image), args.out_dir / png_name(i))
                if images is not None:
                    images[i] = image
    if args.npz is not None:
        save_npz(args.npz, images=images)
    where = " and ".join(str(p) for p in (args.out_dir, args.npz) if p is not None)
    print(f"sample: {args.n} images ({args.sampler}, {n_steps} steps per image, seed {args.seed}) in {where}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

"""Stage `sample`: DDPM (Algorithm 2) or DDIM sampling from the EMA weights (autoguided by the run's early EMA when
sample.guidance != 1); image i depends only on (seed, i).

T, the schedule and the network's shape come from the checkpoint; params.yaml disagreeing with it is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddpmlab.core.checkpoint import build_sampler_from_checkpoint, load_checkpoint
from ddpmlab.core.device import FastDenoiser, resolve_device
from ddpmlab.core.generate import Generated, generate
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.configs import check_checkpoint, sampler_spec
from ddpmlab.pipeline.io import save_image, save_npz, write_json
from ddpmlab.pipeline.schema import load_params


def trajectory_rows(traj: list, m: int) -> np.ndarray:
    """Frames [F][n, H, W, C] -> [m*F, H, W, C] with row = image, column = time (for a grid with ncol=F)."""
    m = min(m, len(traj[0]))
    return np.stack([f[:m] for f in traj], axis=1).reshape(-1, *traj[0].shape[1:])


def save_samples(g: Generated, out, figures, traj_images: int = 8) -> dict:
    """samples.npz, the grid, the trajectory strip and its animated GIF; returns the sampling metrics."""
    from pathlib import Path

    from ddpmlab.core.images import grid, save_gif

    out, figures = Path(out), Path(figures)
    out.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    save_npz(out / "samples.npz", images=g.images)
    scale = max(1, 64 // g.images.shape[1])
    save_image(grid(g.images, scale=scale), figures / "grid.png")
    save_image(grid(trajectory_rows(g.trajectory, traj_images), ncol=len(g.trajectory), scale=scale), figures / "trajectory.png")
    # the same frames as an animation: the first images side by side, x_T to x_0, looping
    m = min(traj_images, len(g.trajectory[0]))
    save_gif([grid(f[:m], ncol=min(m, 4), scale=scale) for f in g.trajectory], figures / "trajectory.gif")
    return {"steps": g.steps, "n_samples": len(g.images), "seconds": g.seconds, "img_per_s": len(g.images) / g.seconds}


@command("sample")
def main(argv=None):
    ap = stage_parser(__doc__, device=True)
    ap.add_argument("--model", required=True, type=Path, help="trained model (train stage)")
    ap.add_argument("--out", required=True, type=Path, help="samples.npz goes here")
    ap.add_argument("--figures", required=True, type=Path, help="grid.png and trajectory.png go here")
    args = ap.parse_args(argv)
    P = load_params(args.params)
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.model)
    check_checkpoint(P, ckpt, str(args.model))
    model, sched, ckpt = build_sampler_from_checkpoint(ckpt, device, P.sample.guidance)
    c, mc = P.sample, ckpt["model_config"]
    shape = (mc["in_channels"], mc["image_size"], mc["image_size"])
    g = generate(FastDenoiser(model, device, compile=c.compile), sched, sampler_spec(c), c.n_samples, c.batch_size, P.seed, shape, device, c.trajectory_frames)
    guide = {"guidance": c.guidance, "guide_fraction": ckpt["train_config"].get("guide_fraction", 0.0) if c.guidance != 1 else 0.0}
    write_json(args.figures / "sampling.json", {"sampler": c.sampler, **guide, **save_samples(g, args.out, args.figures)})
    print(f"sample: {len(g.images)} images with {c.sampler} ({g.steps} steps) in {g.seconds:.1f} s")


if __name__ == "__main__":
    main()

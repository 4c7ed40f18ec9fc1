"""Stage `sample`: DDPM (Algorithm 2) or DDIM sampling from the EMA weights (autoguided by the run's early EMA when
sample.guidance != 1); image i depends only on (seed, i).

T, the schedule and the network's shape come from the checkpoint; params.yaml disagreeing with it is an error.
"""

import argparse
import sys
from pathlib import Path

from ddpmlab.device import FastDenoiser, resolve_device
from ddpmlab.diffusion.generate import generate, save_samples
from ddpmlab.diffusion.sampling import SamplerSpec
from ddpmlab.errors import DataError, ParamError
from ddpmlab.io import write_json
from ddpmlab.schema import ParamsError, load_params
from ddpmlab.training.checkpoint import build_sampler_from_checkpoint, load_checkpoint, schedule_mismatch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", required=True, type=Path, help="trained model (train stage)")
    ap.add_argument("--out", required=True, type=Path, help="samples.npz goes here")
    ap.add_argument("--figures", required=True, type=Path, help="grid.png and trajectory.png go here")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (default: auto)")
    args = ap.parse_args(argv)
    try:
        P = load_params(args.params)
        device = resolve_device(args.device)
        model, sched, ckpt = build_sampler_from_checkpoint(load_checkpoint(args.model), device, P.sample.guidance)
        s = P.schedule
        if msg := schedule_mismatch(ckpt["schedule_config"], P.T, s.name, s.beta_start, s.beta_end, str(args.model)):
            raise ParamError("T/schedule", P.T, msg)
    except (ParamsError, ParamError, DataError, RuntimeError) as e:
        sys.exit(f"sample: {e}")
    c, mc = P.sample, ckpt["model_config"]
    shape = (mc["in_channels"], mc["image_size"], mc["image_size"])
    spec = SamplerSpec(c.sampler, c.steps, c.eta, c.variance, c.spacing)
    g = generate(FastDenoiser(model, device, compile=c.compile), sched, spec, c.n_samples, c.batch_size, P.seed, shape, device, c.trajectory_frames)
    guide = {"guidance": c.guidance, "guide_fraction": ckpt["train_config"].get("guide_fraction", 0.0) if c.guidance != 1 else 0.0}
    write_json(args.figures / "sampling.json", {"sampler": c.sampler, **guide, **save_samples(g, args.out, args.figures)})
    print(f"sample: {len(g.images)} images with {c.sampler} ({g.steps} steps) in {g.seconds:.1f} s")


if __name__ == "__main__":
    main()

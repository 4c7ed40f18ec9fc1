"""Stage `residuals`: the chi-squared check of eps - eps_theta on the validation split, sigma^2(t), the loss-spike ratio."""

import argparse
import sys
from pathlib import Path

from ddpmlab.data.images import to_model
from ddpmlab.data.splits import load_split
from ddpmlab.device import resolve_device
from ddpmlab.errors import DataError
from ddpmlab.residuals.run import run
from ddpmlab.schema import ParamsError, load_params
from ddpmlab.training.checkpoint import build_model_from_checkpoint, load_checkpoint, schedule_mismatch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", required=True, type=Path, help="trained model (train stage)")
    ap.add_argument("--val", required=True, type=Path, help="prepared val.npz")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (default: auto)")
    args = ap.parse_args(argv)
    try:
        P = load_params(args.params)
        val_x = load_split(args.val)
        if len(val_x) * P.residuals.draws_per_t < 2:
            raise DataError(f"{len(val_x)} validation image(s) x residuals.draws_per_t = {P.residuals.draws_per_t} < 2 rows per t; raise draws_per_t")
        device = resolve_device(args.device)
        model, sched, ckpt = build_model_from_checkpoint(load_checkpoint(args.model), device)
        s = P.schedule
        if msg := schedule_mismatch(ckpt["schedule_config"], P.T, s.name, s.beta_start, s.beta_end, str(args.model)):
            raise DataError(msg)
    except (ParamsError, DataError, RuntimeError) as e:
        sys.exit(f"residuals: {e}")
    c = P.residuals
    chi, spikes = run(model, sched, to_model(val_x).to(device), ckpt["history"], int(ckpt["n_train"]),
                      n_t=c.n_t, draws_per_t=c.draws_per_t, alpha=c.alpha, seed=P.seed, out=args.out)
    print("residuals:", chi.reading())
    print("residuals:", spikes.reading())


if __name__ == "__main__":
    main()

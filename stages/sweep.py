"""Stage `sweep`: FID, KID, precision and recall against the number of sampling steps (DDIM eta 0 and 1, optionally DDPM).
T, the schedule and the network come from the checkpoint; params.yaml disagreeing with it is an error."""

import argparse
import sys
from functools import partial
from pathlib import Path

from ddpmlab.data.splits import load_array
from ddpmlab.device import resolve_device
from ddpmlab.errors import DataError
from ddpmlab.evaluation import sweep
from ddpmlab.evaluation.fid import InceptionFeatures
from ddpmlab.schema import ParamsError, load_params
from ddpmlab.training.checkpoint import load_checkpoint


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", required=True, type=Path, help="trained model (train stage)")
    ap.add_argument("--reference", required=True, type=Path, help="reference features .npz (reference stage)")
    ap.add_argument("--weights", required=True, type=Path, help="converted Inception weights (inception stage)")
    ap.add_argument("--out", required=True, type=Path, help="folder for sweep.csv, sweep.png, metrics.json")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (default: auto)")
    args = ap.parse_args(argv)
    try:
        P = load_params(args.params)
        device = resolve_device(args.device)
    except (ParamsError, RuntimeError) as e:  # RuntimeError: --device cuda without a visible GPU
        sys.exit(f"sweep: {e}")
    try:
        ref = load_array(args.reference, "features")  # before the weights: cheap first
        extract = partial(InceptionFeatures(args.weights, device), batch=P.evaluate.batch_size, desc="features")
        df = sweep.sweep_checkpoint(load_checkpoint(args.model), P, extract, ref, device)
    except (DataError, FileNotFoundError, sweep.CheckpointMismatch) as e:
        sys.exit(f"sweep: {e}")
    sweep.write(df, args.out)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()

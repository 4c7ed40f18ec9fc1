"""Stage `memorization`: nearest training image of every sample (pixels, with flips; Inception cosine) against the validation baseline."""

import argparse
import sys
from pathlib import Path

from ddpmlab.errors import DataError
from ddpmlab.schema import ParamsError, load_params
from ddpmlab.io import write_json
from ddpmlab.evaluation.memorization import analyse, figures
from ddpmlab.data.splits import load_array, load_split


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--samples", required=True, type=Path, help="samples.npz")
    ap.add_argument("--sample-features", required=True, type=Path)
    ap.add_argument("--train", required=True, type=Path, help="prepared train.npz")
    ap.add_argument("--val", required=True, type=Path, help="prepared val.npz")
    ap.add_argument("--train-features", required=True, type=Path)
    ap.add_argument("--val-features", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    args = ap.parse_args(argv)
    try:
        mp = load_params(args.params).memorization
        ratio, cos = mp.pixel_ratio, mp.cosine_threshold
        samples, train, val = load_array(args.samples, "images"), load_split(args.train), load_split(args.val)
        fs, ft, fv = load_array(args.sample_features, "features"), load_array(args.train_features, "features"), load_array(args.val_features, "features")
    except (ParamsError, DataError) as e:
        sys.exit(f"memorization: {e}")
    m, details = analyse(samples, train, val, fs, ft, fv, ratio, cos)
    args.out.mkdir(parents=True, exist_ok=True)
    figures(samples, train, details, m, args.out)
    write_json(args.out / "metrics.json", m.metrics())
    print("memorization:", m.reading())


if __name__ == "__main__":
    main()

"""Stage `memorization`: nearest training image of every sample (pixels, with flips; Inception cosine) against the validation baseline."""

import argparse
import sys
from pathlib import Path

import numpy as np

from ddpmlab.config import _float, load_params
from ddpmlab.errors import DataError, ParamError
from ddpmlab.io import write_json
from ddpmlab.evaluation.memorization import analyse, figures
from ddpmlab.data.splits import load_split


def _npz(path, key):
    if not Path(path).is_file():
        raise DataError(f"{path} not found: run `dvc repro` for the stage that writes it")
    with np.load(path) as z:
        return z[key]


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
        p = load_params(args.params)
        ratio = _float(p, "memorization.pixel_ratio", 0, 1, lo_open=True)
        cos = _float(p, "memorization.cosine_threshold", 0, 1, lo_open=True, hi_open=True)
        samples, train, val = _npz(args.samples, "images"), load_split(args.train), load_split(args.val)
        fs, ft, fv = _npz(args.sample_features, "features"), _npz(args.train_features, "features"), _npz(args.val_features, "features")
    except (ParamError, DataError) as e:
        sys.exit(f"memorization: {e}")
    m, details = analyse(samples, train, val, fs, ft, fv, ratio, cos)
    args.out.mkdir(parents=True, exist_ok=True)
    figures(samples, train, details, m, args.out)
    write_json(args.out / "metrics.json", m.metrics())
    print("memorization:", m.reading())


if __name__ == "__main__":
    main()

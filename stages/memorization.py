"""Stage `memorization`: nearest training image of every sample (pixels, with flips; Inception cosine) against the validation baseline."""

import argparse
import sys
from pathlib import Path

import numpy as np

from ddpmlab.errors import DataError
from ddpmlab.schema import ParamsError, load_params
from ddpmlab.io import write_json
from ddpmlab.evaluation.memorization import analyse, figures
from ddpmlab.data.splits import load_split


def _npz(path, key):
    if not Path(path).is_file():
        raise DataError(f"{path} not found: run `dvc repro` for the stage that writes it")
    try:
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path} cannot be read ({type(e).__name__}: {e}); rerun the stage that writes it") from None


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
        samples, train, val = _npz(args.samples, "images"), load_split(args.train), load_split(args.val)
        fs, ft, fv = _npz(args.sample_features, "features"), _npz(args.train_features, "features"), _npz(args.val_features, "features")
    except (ParamsError, DataError) as e:
        sys.exit(f"memorization: {e}")
    m, details = analyse(samples, train, val, fs, ft, fv, ratio, cos)
    args.out.mkdir(parents=True, exist_ok=True)
    figures(samples, train, details, m, args.out)
    write_json(args.out / "metrics.json", m.metrics())
    print("memorization:", m.reading())


if __name__ == "__main__":
    main()

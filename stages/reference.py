"""Stage `reference`: Inception features of the training split, computed once per dataset and resolution."""

import argparse
import sys
from pathlib import Path

import numpy as np

from ddpmlab.config import _int, load_params
from ddpmlab.errors import DataError, ParamError
from ddpmlab.fid import InceptionFeatures
from ddpmlab.prepare import load_split
from ddpmlab.device import resolve_device


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--images", required=True, type=Path, help="prepared .npz of reference images")
    ap.add_argument("--weights", required=True, type=Path, help="converted Inception weights")
    ap.add_argument("--out", required=True, type=Path, help="features .npz")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        batch = _int(load_params(args.params), "evaluate.batch_size", lo=1)
        feats = InceptionFeatures(args.weights, resolve_device(args.device))(load_split(args.images), batch, desc="reference features")
    except (ParamError, DataError) as e:
        sys.exit(f"reference: {e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, features=feats)
    print(f"reference: {len(feats)} feature vectors -> {args.out}")


if __name__ == "__main__":
    main()

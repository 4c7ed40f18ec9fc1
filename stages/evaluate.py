"""Stage `evaluate`: FID and KID (torch-fidelity, standard Inception) of the samples against the training split."""

import argparse
import sys
from pathlib import Path

import numpy as np

from ddpmlab.config import _int, load_params
from ddpmlab.errors import DataError, ParamError
from ddpmlab.evaluation.fid import InceptionFeatures, fid_from_features, kid_from_features
from ddpmlab.io import write_json
from ddpmlab.device import resolve_device

# FID's bias at small N is large (Chong & Forsyth 2020); below this many images prefer KID.
FID_RELIABLE_N = 2048


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--samples", required=True, type=Path, help="samples.npz (sample stage)")
    ap.add_argument("--reference", required=True, type=Path, help="reference features .npz (reference stage)")
    ap.add_argument("--weights", required=True, type=Path, help="converted Inception weights")
    ap.add_argument("--features", required=True, type=Path, help="where the samples' features go (.npz)")
    ap.add_argument("--out", required=True, type=Path, help="metrics .json")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        p = load_params(args.params)
        subsets = _int(p, "evaluate.kid_subsets", lo=1)
        subset_size = _int(p, "evaluate.kid_subset_size", lo=2)
        batch = _int(p, "evaluate.batch_size", lo=1)
        seed = _int(p, "seed")
        with np.load(args.samples) as z:
            samples = z["images"]
        with np.load(args.reference) as z:
            ref = z["features"]
        feats = InceptionFeatures(args.weights, resolve_device(args.device))(samples, batch, desc="sample features")
    except (ParamError, DataError) as e:
        sys.exit(f"evaluate: {e}")
    args.features.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.features, features=feats)

    used_subset = min(subset_size, len(feats), len(ref))
    kid, kid_std = kid_from_features(feats, ref, subsets, used_subset, seed)
    fid = fid_from_features(feats, ref)
    small = min(len(feats), len(ref)) < FID_RELIABLE_N
    write_json(
        args.out,
        {
            "fid": fid,
            "kid": kid,
            "kid_std": kid_std,
            "kid_subset_size": used_subset,
            "kid_subsets": subsets,
            "n_generated": len(feats),
            "n_reference": len(ref),
            "fid_small_sample_bias": small,
        },
    )
    print(f"evaluate: FID {fid:.2f}, KID {kid:.4f} ± {kid_std:.4f} (subset {used_subset}), {len(feats)} generated vs {len(ref)} reference images")
    if small:
        print(f"WARNING: fewer than {FID_RELIABLE_N} images: FID is strongly biased upward at this N; compare KID, and compare FID only at equal N.", file=sys.stderr)


if __name__ == "__main__":
    main()

"""KID of several sample sets against one common reference, so runs at different image sizes can be compared.

`evaluate` scores each run against its own training images, at the run's own size: a 24 px run meets an
easier reference than a 32 px run, and its lower KID then says as much about the reference as about the
model (docs/measured.md, "Choosing the default"). This tool resizes every sample set to the reference's size
(PIL bilinear, as `prepare` resizes) and scores all of them against the same Inception features, per
disjoint draw of `--draw` images (KID mean and spread over draws) and over all images (FID, KID,
precision, recall).

    ddpmlab common-reference --reference data/prepared/train.npz \\
        --weights models/inception/inception_fid.pt a/samples.npz b/samples.npz [--draw 64] [--json out.json]

The reference is a prepared split (`data/prepared/train.npz` of the run whose size you want to compare at;
another run's is in the DVC cache: `dvc exp apply` or `git checkout` + `dvc checkout`). Sample files are the
`sample` stage's `samples/samples.npz` or any .npz with `images` uint8 [N, H, W, C].
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ddpmlab.core.errors import DataError
from ddpmlab.core.fid import kid_from_features
from ddpmlab.core.metrics import MetricSpec, feature_metrics
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.data.splits import read_array
from ddpmlab.pipeline.io import write_json

Extractor = Callable[[np.ndarray], np.ndarray]
MAX_SIDE = 1024  # larger sample images are refused (this compares small-image runs)


def load_images(path: Path) -> np.ndarray:
    """uint8 [N, H, W, C] (C 1 or 3, square, N >= 2) from an .npz's `images`; DataError (one line) otherwise. No pickles."""
    path = Path(path)
    images = read_array(path, "images")  # "<path> not found" and every unreadable file: one line from the shared reader
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{path}: images must be uint8 [N, H, W, C] with C = 1 or 3, got {images.dtype} {list(images.shape)}")
    n, h, w, _ = images.shape
    if h != w or not 1 <= h <= MAX_SIDE or n < 2:
        raise DataError(f"{path}: images must be square, 1-{MAX_SIDE} px, at least 2 of them; got {list(images.shape)}")
    return images


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> [N, size, size, C] with PIL bilinear (antialiased when shrinking, as `prepare`); unchanged if already that size."""
    if images.shape[1] == size:
        return images
    grey = images.shape[-1] == 1
    out = [np.asarray(Image.fromarray(im[..., 0] if grey else im).resize((size, size), Image.BILINEAR)) for im in images]
    out = np.stack(out)
    return out[..., None] if grey else out


def score(images: np.ndarray, ref_features: np.ndarray, size: int, extract: Extractor, spec: MetricSpec, draw: int) -> dict:
    """One sample set against the reference features: KID per disjoint draw of `draw` images (the first
    floor(N / draw) draws; all N as one draw when N < draw) and FID/KID/precision/recall over all N."""
    feats = extract(resize_images(images, size))
    draw = min(draw, len(feats))
    subset = min(spec.kid_subset_size, draw, len(ref_features))  # as feature_metrics caps it
    kids = [kid_from_features(feats[i : i + draw], ref_features, spec.kid_subsets, subset, spec.kid_seed)[0]
            for i in range(0, len(feats) - draw + 1, draw)]  # KID only: FID and precision/recall per draw would be discarded
    whole = feature_metrics(feats, ref_features, spec)
    return {
        "n": len(feats), "size_from": int(images.shape[1]), "size": size, "draw": draw, "kid_draws": kids,
        "kid_draw_mean": float(np.mean(kids)), "kid_draw_sd": float(np.std(kids, ddof=1)) if len(kids) > 1 else None,
        **{k: whole[k] for k in ("fid", "kid", "kid_std", "precision", "recall")},
    }


def compare(sample_sets: dict[str, np.ndarray], reference: np.ndarray, extract: Extractor, spec: MetricSpec, draw: int = 64) -> dict:
    """{name: score} for every sample set against one reference (uint8 images at the size all are compared at)."""
    channels = reference.shape[-1]
    for name, images in sample_sets.items():
        if images.shape[-1] != channels:
            raise DataError(f"{name}: {images.shape[-1]} channel(s), the reference has {channels}; compare runs of the same data")
    ref_features = extract(reference)
    return {name: score(images, ref_features, reference.shape[1], extract, spec, draw) for name, images in sample_sets.items()}


def table(results: dict) -> str:
    rows = ["| samples | N (from px) | KID per draw: mean (sd, draws of n) | KID all | FID all | precision / recall |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        sd = "-" if r["kid_draw_sd"] is None else f"{r['kid_draw_sd']:.4f}"
        rows.append(f"| {name} | {r['n']} ({r['size_from']} -> {r['size']}) | {r['kid_draw_mean']:.4f} ({sd}, {len(r['kid_draws'])} of {r['draw']}) "
                    f"| {r['kid']:.4f} ± {r['kid_std']:.4f} | {r['fid']:.1f} | {r['precision']:.3f} / {r['recall']:.3f} |")
    return "\n".join(rows)


@command("common_reference")
def main(argv=None) -> int:
    ap = stage_parser(__doc__, device=True, prog="ddpmlab common-reference",
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", nargs="+", type=Path, help="sample .npz files (images uint8 [N, H, W, C])")
    ap.add_argument("--reference", required=True, type=Path, help="prepared split .npz whose images (and size) are the common reference")
    ap.add_argument("--weights", type=Path, default=Path("models/inception/inception_fid.pt"), help="converted Inception weights (inception stage)")
    ap.add_argument("--draw", type=int, default=64, help="images per KID draw (default 64, the default run's sample count)")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.draw < 2:
        ap.error(f"--draw {args.draw}: at least 2 images per draw")
    from ddpmlab.core.device import resolve_device
    from ddpmlab.pipeline.features import inception_extractor, metric_spec
    from ddpmlab.pipeline.schema import load_params

    P = load_params(args.params)
    reference = load_images(args.reference)
    sets = {str(p): load_images(p) for p in args.samples}
    results = compare(sets, reference, inception_extractor(P, args.weights, resolve_device(args.device)), metric_spec(P), args.draw)
    print(f"reference: {args.reference} ({len(reference)} images, {reference.shape[1]} px)")
    print(table(results))
    if args.json:
        write_json(args.json, {"reference": str(args.reference), "n_reference": len(reference), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())

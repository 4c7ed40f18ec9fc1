"""Stage `evaluate`: FID, KID, precision and recall (standard offline Inception features) of the samples
against the training split's reference features."""

from pathlib import Path

from ddpmlab.core.device import resolve_device
from ddpmlab.core.metrics import evaluate_samples, summary
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.data.splits import load_features, load_images
from ddpmlab.pipeline.features import inception_extractor, metric_spec
from ddpmlab.pipeline.io import save_npz, write_json
from ddpmlab.pipeline.schema import load_params


@command("evaluate")
def main(argv=None):
    ap = stage_parser(__doc__, device=True)
    ap.add_argument("--samples", required=True, type=Path, help="samples.npz (sample stage)")
    ap.add_argument("--reference", required=True, type=Path, help="reference features .npz (reference stage)")
    ap.add_argument("--weights", required=True, type=Path, help="converted Inception weights (inception stage)")
    ap.add_argument("--features", required=True, type=Path, help="where the samples' features go (.npz)")
    ap.add_argument("--out", required=True, type=Path, help="metrics .json")
    args = ap.parse_args(argv)
    P = load_params(args.params)
    images, ref = load_images(args.samples), load_features(args.reference)  # before the weights: cheap first
    extract = inception_extractor(P, args.weights, resolve_device(args.device), desc="sample features")
    feats, m = evaluate_samples(images, ref, extract, metric_spec(P))
    save_npz(args.features, features=feats)
    write_json(args.out, m)
    print(f"evaluate: {summary(m)}")


if __name__ == "__main__":
    main()

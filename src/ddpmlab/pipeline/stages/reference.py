"""Stage `reference`: Inception features of the training and validation splits, computed once per dataset and resolution."""

from pathlib import Path

from ddpmlab.core.device import resolve_device
from ddpmlab.core.fid import InceptionFeatures
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.data.splits import load_split
from ddpmlab.pipeline.io import save_npz
from ddpmlab.pipeline.schema import load_params


@command("reference")
def main(argv=None):
    ap = stage_parser(__doc__, device=True)
    ap.add_argument("--weights", required=True, type=Path, help="converted Inception weights")
    ap.add_argument("--split", nargs=2, action="append", required=True, metavar=("IMAGES_NPZ", "FEATURES_NPZ"),
                    help="a prepared split and where its features go; repeat per split")
    args = ap.parse_args(argv)
    batch = load_params(args.params).evaluate.batch_size
    extractor = InceptionFeatures(args.weights, resolve_device(args.device))
    for images, out in args.split:
        feats = extractor(load_split(Path(images)), batch, desc=f"features of {Path(images).name}")
        save_npz(out, features=feats)
        print(f"reference: {len(feats)} feature vectors of {images} -> {out}")


if __name__ == "__main__":
    main()

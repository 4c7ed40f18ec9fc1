"""Stage `download`: fetch the raw images (params `data`), verified by sha256, into OUT/images."""

import argparse
import sys
from pathlib import Path

from ddpmlab.config import load_params
from ddpmlab.data.download import run_download
from ddpmlab.errors import DataError, ParamError


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (images/ and manifest.json)")
    args = ap.parse_args(argv)
    try:
        res = run_download(load_params(args.params), args.out)
    except (ParamError, DataError) as e:
        sys.exit(f"download: {e}")
    print(f"download: {len(res.images)} images from source '{res.source}' in {args.out / 'images'}")


if __name__ == "__main__":
    main()

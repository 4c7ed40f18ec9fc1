"""Stage `download`: fetch the raw images (params `data`), verified by sha256, into OUT/images.

Nothing downloaded is executed; downloads are bounded (data.timeout_s, deadline_s, max_download_mb,
max_expanded_mb); OUT is replaced only after everything succeeded, and only if this stage wrote it.
"""

import sys
from pathlib import Path

from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.data.download import run_download
from ddpmlab.pipeline.schema import load_params


@command("download")
def main(argv=None):
    ap = stage_parser(__doc__)
    ap.add_argument("--out", required=True, type=Path, help="output folder (images/ and manifest.json)")
    args = ap.parse_args(argv)
    try:
        res = run_download(load_params(args.params), args.out)
    except KeyboardInterrupt:
        sys.exit("download: interrupted; nothing was changed in " + str(args.out))
    print(f"download: {len(res.images)} images from source '{res.source}' in {args.out / 'images'}")
    if res.manifest.get("skipped"):
        print(f"download: skipped {len(res.manifest['skipped'])} entries (see manifest.json 'skipped')", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Stage `prepare`: RGB, square, resize to prepare.image_size, split train/validation; contact sheet and stats.

Image headers are checked before decoding (prepare.max_megapixels, prepare.max_aspect_ratio);
unreadable or refused files are skipped and listed with their reason in REPORTS/skipped.json.
"""

import sys
from pathlib import Path

from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.data.prepare import (
    prepare_from_params,
    save_prepared,
    write_reports,
)
from ddpmlab.pipeline.io import write_json
from ddpmlab.pipeline.schema import load_params


@command("prepare")
def main(argv=None):
    ap = stage_parser(__doc__)
    ap.add_argument("--raw", required=True, type=Path, help="download stage output (holds images/)")
    ap.add_argument("--out", required=True, type=Path, help="folder for train.npz and val.npz")
    ap.add_argument("--reports", required=True, type=Path, help="folder for stats.json and figures")
    args = ap.parse_args(argv)
    prep = prepare_from_params(load_params(args.params), args.raw / "images")
    save_prepared(prep, args.out)
    skipped = prep.stats.pop("skipped_files")
    write_json(args.reports / "skipped.json", skipped)
    write_reports(prep, args.reports)
    s = prep.stats
    print(f"prepare: {s['used']} of {s['files']} files usable ({s['skipped']} skipped), train {s['train']}, val {s['val']}")
    for name, why in skipped.items():
        print(f"  skipped {name}: {why}", file=sys.stderr)


if __name__ == "__main__":
    main()

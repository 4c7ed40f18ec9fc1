"""Stage `report`: assemble the run's figures and metrics into one markdown file."""

import argparse
import sys
from pathlib import Path

from ddpmlab.config import load_params
from ddpmlab.reporting.report import build

INPUTS = (
    "prepare_stats", "contact_sheet", "raw_sizes", "schedule_metrics", "schedule_table", "schedule_plot", "forward",
    "train_metrics", "train_speed", "loss_plot", "residual_metrics", "loss_by_t", "loss_by_t_plot", "qq", "hist", "spikes",
    "sampling", "grid", "trajectory", "evaluate_metrics", "sweep_table", "sweep_plot", "memorization_metrics",
    "nn_distances", "closest_pairs",
)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, epilog="inputs: " + ", ".join(INPUTS))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--input", action="append", default=[], metavar="NAME=PATH", help="one per input (all required)")
    ap.add_argument("--out", required=True, type=Path, help="report .md")
    args = ap.parse_args(argv)
    paths = dict(kv.split("=", 1) for kv in args.input)
    missing = [k for k in INPUTS if k not in paths]
    unknown = [k for k in paths if k not in INPUTS]
    if missing or unknown:
        sys.exit(f"report: missing inputs {missing}, unknown inputs {unknown}; expected: {', '.join(INPUTS)}")
    absent = [p for p in paths.values() if not Path(p).exists()]
    if absent:
        sys.exit(f"report: inputs not found: {absent}; run `dvc repro` to produce them")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build({k: Path(v) for k, v in paths.items()}, load_params(args.params), args.out)
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()

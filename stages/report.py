"""Stage `report`: assemble the run's figures and metrics into one markdown file.

Its inputs are the outputs of the other stages, found in dvc.yaml (the report stage's deps): no path
is written both here and there."""

import argparse
import sys
from pathlib import Path

from ddpmlab.reporting.dvcyaml import DvcYamlError
from ddpmlab.reporting.report import build, inputs
from ddpmlab.schema import ParamsError, load_params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dvc-yaml", default=Path("dvc.yaml"), type=Path, help="the pipeline whose outputs are reported")
    ap.add_argument("--out", required=True, type=Path, help="report .md")
    args = ap.parse_args(argv)
    try:
        P = load_params(args.params)
        paths = inputs(args.dvc_yaml)
    except (ParamsError, DvcYamlError) as e:
        sys.exit(f"report: {e}")
    absent = [str(p) for p in paths.values() if not p.exists()]
    if absent:
        sys.exit(f"report: inputs not found: {', '.join(absent)}; run `dvc repro` to produce them")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build(paths, P.model_dump(mode="json"), args.out)
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()

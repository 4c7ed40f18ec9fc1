"""Stage `schedule`: sqrt(alpha_bar_t) decay for several T and schedules, the terminal table, the forward process on one image."""

import argparse
import sys
from pathlib import Path

import pandas as pd

from ddpmlab.data.splits import load_split
from ddpmlab.diffusion.analysis import analyse
from ddpmlab.errors import DataError
from ddpmlab.io import write_json
from ddpmlab.schema import ParamsError, load_params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", required=True, type=Path, help="prepared train.npz (first image is shown noised)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    args = ap.parse_args(argv)
    try:
        P = load_params(args.params)
        s = P.schedule
        m, rows = analyse(s.name, P.T, s.beta_start, s.beta_end, s.compare_T, s.compare_names, s.forward_t,
                          s.max_sqrt_alpha_bar_T, load_split(args.train)[0], P.seed, args.out)
    except (ParamsError, DataError) as e:
        sys.exit(f"schedule: {e}")
    pd.DataFrame(rows).to_csv(args.out / "terminal.csv", index=False, float_format="%.6g")
    write_json(args.out / "metrics.json", m)
    print(f"schedule: {s.name} T={P.T}: alpha_bar_T={m['alpha_bar_T']:.3g}, sqrt(alpha_bar_T)={m['sqrt_alpha_bar_T']:.3g}")
    if m["x_T_not_pure_noise"]:
        print(f"WARNING: sqrt(alpha_bar_T) = {m['sqrt_alpha_bar_T']:.3g} exceeds schedule.max_sqrt_alpha_bar_T = {s.max_sqrt_alpha_bar_T:g}: "
              "x_T still holds visible signal, so sampling from N(0, I) starts off-distribution. Increase T or use the cosine schedule.",
              file=sys.stderr)


if __name__ == "__main__":
    main()

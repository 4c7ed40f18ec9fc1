"""Stage `schedule`: sqrt(alpha_bar_t) decay for several T and schedules, the terminal table, the forward process on one image."""

import argparse
import sys
from pathlib import Path

import pandas as pd

from ddpmlab.diffusion import analysis as sa
from ddpmlab.config import ScheduleConfig, _float, _int, _int_list, get, load_params
from ddpmlab.errors import ParamError
from ddpmlab.io import write_json
from ddpmlab.data.prepare import load_split
from ddpmlab.diffusion.schedule import SCHEDULES


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", required=True, type=Path, help="prepared train.npz (first image is shown noised)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    try:
        cfg = ScheduleConfig.from_params(p)
        compare_T = _int_list(p, "schedule.compare_T", lo=1, min_len=1)
        names = get(p, "schedule.compare_names")
        if not isinstance(names, list) or not names or any(n not in SCHEDULES for n in names):
            raise ParamError("schedule.compare_names", names, f"a non-empty list of {', '.join(SCHEDULES)}")
        forward_t = _int_list(p, "schedule.forward_t", lo=0, min_len=1)
        threshold = _float(p, "schedule.max_sqrt_alpha_bar_T", 0, 1, lo_open=True)
        seed = _int(p, "seed")
    except ParamError as e:
        sys.exit(f"schedule: {e}")

    args.out.mkdir(parents=True, exist_ok=True)
    Ts = sorted(set(compare_T) | {cfg.T})
    pd.DataFrame(sa.table(names, Ts, cfg.beta_start, cfg.beta_end)).to_csv(args.out / "terminal.csv", index=False, float_format="%.6g")
    sa.decay_figure(names, Ts, cfg.beta_start, cfg.beta_end, cfg.T, threshold, args.out / "sqrt_alpha_bar.png")
    sched = cfg.build()
    shown = sa.forward_strip(load_split(args.train)[0], sched, forward_t, seed, args.out / "forward_process.png")

    summary = sched.summary()
    warn = summary["sqrt_alpha_bar_T"] > threshold
    write_json(args.out / "metrics.json", {**summary, "schedule": cfg.name, "x_T_not_pure_noise": warn, "forward_t": shown})
    print(f"schedule: {cfg.name} T={cfg.T}: alpha_bar_T={summary['alpha_bar_T']:.3g}, sqrt(alpha_bar_T)={summary['sqrt_alpha_bar_T']:.3g}")
    if warn:
        print(
            f"WARNING: sqrt(alpha_bar_T) = {summary['sqrt_alpha_bar_T']:.3g} exceeds schedule.max_sqrt_alpha_bar_T = {threshold:g}: "
            "x_T still holds visible signal, so sampling from N(0, I) starts off-distribution. Increase T or use the cosine schedule.",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()

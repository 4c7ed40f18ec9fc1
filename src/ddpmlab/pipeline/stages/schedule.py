"""Stage `schedule`: sqrt(alpha_bar_t) decay for several T and schedules, the terminal table, the forward process on one image."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ddpmlab.core.images import grid, to_model, to_uint8
from ddpmlab.core.schedule import Schedule, make_betas, q_sample
from ddpmlab.core.streams import Stream, torch_generator
from ddpmlab.pipeline import figures as plotting
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.data.splits import load_split
from ddpmlab.pipeline.io import save_csv, save_image, write_json
from ddpmlab.pipeline.schema import load_params


def table(names, Ts, beta_start: float, beta_end: float) -> list[dict]:
    rows = []
    for name in names:
        for T in Ts:
            s = Schedule(make_betas(name, T, beta_start, beta_end))
            rows.append({"schedule": name, **s.summary()})
    return rows


def decay_figure(names, Ts, beta_start: float, beta_end: float, chosen_T: int, threshold: float, path):
    fig, axes = plotting.plt.subplots(1, 2, figsize=(10, 4))
    styles = {"linear": "-", "cosine": "--"}
    for name in names:
        for T in Ts:
            s = Schedule(make_betas(name, T, beta_start, beta_end))
            t = np.arange(1, T + 1)
            lw = 2.2 if T == chosen_T else 1.0
            for ax, x in zip(axes, (t, t / T)):
                ax.plot(x, s.sqrt_alpha_bar, styles.get(name, ":"), lw=lw, label=f"{name} T={T}")
    for ax, xl in zip(axes, ("t", "t / T")):
        ax.set_yscale("log")
        ax.axhline(threshold, color="k", lw=0.8, ls=":", label=f"warn above {threshold:g}")
        ax.set_xlabel(xl)
        ax.set_ylabel("sqrt(alpha_bar_t)")
        ax.grid(alpha=0.3)
    axes[0].set_title("signal coefficient against step")
    axes[1].set_title("against the fraction of the process")
    axes[1].legend(fontsize=7, ncol=2)
    plotting.save(fig, path)


def forward_strip(image: np.ndarray, sched: Schedule, ts, seed: int, path) -> list[int]:
    """q(x_t | x_0) of one uint8 [H, W, 3] image at the steps ts (clipped to T-1), one noise draw."""
    ts = sorted({min(int(t), sched.T - 1) for t in ts})
    x0 = to_model(image[None]).repeat(len(ts), 1, 1, 1)
    noise = torch.randn(x0[:1].shape, generator=torch_generator(seed, Stream.FORWARD_STRIP)).repeat(len(ts), 1, 1, 1)
    xt = q_sample(sched, x0, torch.tensor(ts), noise)
    scale = max(1, 96 // image.shape[0])
    save_image(grid(to_uint8(xt), ncol=len(ts), scale=scale), path)
    return ts


def analyse(name: str, T: int, beta_start: float, beta_end: float, compare_T, compare_names, forward_t, threshold: float,
            image: np.ndarray, seed: int, out) -> tuple[dict, list[dict]]:
    """The schedule stage's work: terminal table, decay figure, forward strip; returns (metrics, table rows).

    metrics["x_T_not_pure_noise"] is True when sqrt(alpha_bar_T) exceeds `threshold`: x_T then still
    holds visible signal, so sampling from N(0, I) starts off-distribution.
    """
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    Ts = sorted(set(compare_T) | {T})
    rows = table(compare_names, Ts, beta_start, beta_end)
    decay_figure(compare_names, Ts, beta_start, beta_end, T, threshold, out / "sqrt_alpha_bar.png")
    sched = Schedule.from_params(name, T, beta_start, beta_end)
    shown = forward_strip(image, sched, forward_t, seed, out / "forward_process.png")
    summary = sched.summary()
    return {**summary, "schedule": name, "x_T_not_pure_noise": summary["sqrt_alpha_bar_T"] > threshold, "forward_t": shown}, rows


@command("schedule")
def main(argv=None):
    ap = stage_parser(__doc__)
    ap.add_argument("--train", required=True, type=Path, help="prepared train.npz (first image is shown noised)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    args = ap.parse_args(argv)
    P = load_params(args.params)
    s = P.schedule
    m, rows = analyse(s.name, P.T, s.beta_start, s.beta_end, s.compare_T, s.compare_names, s.forward_t,
                      s.max_sqrt_alpha_bar_T, load_split(args.train)[0], P.seed, args.out)
    save_csv(pd.DataFrame(rows), args.out / "terminal.csv", index=False, float_format="%.6g")
    write_json(args.out / "metrics.json", m)
    print(f"schedule: {s.name} T={P.T}: alpha_bar_T={m['alpha_bar_T']:.3g}, sqrt(alpha_bar_T)={m['sqrt_alpha_bar_T']:.3g}")
    if m["x_T_not_pure_noise"]:
        print(f"WARNING: sqrt(alpha_bar_T) = {m['sqrt_alpha_bar_T']:.3g} exceeds schedule.max_sqrt_alpha_bar_T = {s.max_sqrt_alpha_bar_T:g}: "
              "x_T still holds visible signal, so sampling from N(0, I) starts off-distribution. Increase T or use the cosine schedule.",
              file=sys.stderr)


if __name__ == "__main__":
    main()

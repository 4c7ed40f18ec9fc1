"""Stage `residuals`: the chi-squared check of eps - eps_theta on the validation split, sigma^2(t), the loss-spike ratio.

Outputs in --out: metrics.json (flat, see check.metrics), loss_by_t.csv (sigma^2(t) with its CI),
residuals.npz (r, t, T: the input of `python -m ddpmlab.tools.residuals check`) and the figures,
the training loss curves among them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ddpmlab.core.checkpoint import build_model_from_checkpoint, load_checkpoint
from ddpmlab.core.device import resolve_device
from ddpmlab.core.errors import DataError
from ddpmlab.core.images import to_model
from ddpmlab.core.residuals import check as R
from ddpmlab.core.residuals.collect import collect_residuals
from ddpmlab.core.schedule import Schedule
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.configs import check_checkpoint
from ddpmlab.pipeline.data.splits import load_split
from ddpmlab.pipeline.io import save_csv, save_npz, write_json
from ddpmlab.pipeline.schema import load_params


def run(model, sched: Schedule, val_x: torch.Tensor, history: list, n_train: int, *, n_t: int, draws_per_t: int,
        alpha: float, seed: int, out: Path) -> tuple[R.CheckResult, R.SpikeResult]:
    """Collect, check, write every output of the stage into `out`; returns the two results.

    history: the checkpoint's per-epoch records (train/loss; val/loss and the val/resid_* effect sizes
    where validated); the training loss curves (loss.png) are drawn from it here, not in the train stage,
    so a figure tweak never retrains."""
    from ddpmlab.pipeline.residual_figures import (  # matplotlib only where figures are drawn
        loss_curves,
        over_training,
        plot_all,
    )

    train_losses = [h["train/loss"] for h in history]
    val_losses = [h["val/loss"] for h in history if "val/loss" in h]

    r, t, tk, w = collect_residuals(model, sched, val_x, n_t, draws_per_t, seed)
    chi, s2, rows = R.chi_squared_check(r, t, sched.T, alpha, seed=seed)
    widths = np.round(w * sched.T).astype(np.int64)
    spikes = R.spike_check(train_losses, s2, w, chi.D, n_train, alpha, widths)

    out.mkdir(parents=True, exist_ok=True)
    save_npz(out / "residuals.npz", r=r, t=t, T=np.int64(sched.T))
    save_csv(pd.DataFrame({"t": s2.t, "sigma2": s2.sigma2, "ci_lo": s2.lo, "ci_hi": s2.hi, "rows": s2.rows, "weight": w}),
             out / "loss_by_t.csv", index=False, float_format="%.6g")
    plot_all(r, t, s2, rows, chi, spikes, train_losses, out, seed=seed)
    loss_curves(history, out / "loss.png")
    m = R.metrics(chi, spikes)
    m["val_loss_epoch_std"] = R.observed_epoch_std(val_losses)[0]
    for k, (first, last, s_first, s_last) in over_training(history, out).items():
        m[f"training_{k}_first"], m[f"training_{k}_last"] = first, last
    write_json(out / "metrics.json", m)
    return chi, spikes


@command("residuals")
def main(argv=None):
    ap = stage_parser(__doc__, device=True)
    ap.add_argument("--model", required=True, type=Path, help="trained model (train stage)")
    ap.add_argument("--val", required=True, type=Path, help="prepared val.npz")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    args = ap.parse_args(argv)
    P = load_params(args.params)
    val_x = load_split(args.val)
    if len(val_x) * P.residuals.draws_per_t < 2:
        raise DataError(f"{len(val_x)} validation image(s) x residuals.draws_per_t = {P.residuals.draws_per_t} < 2 rows per t; raise draws_per_t")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.model)
    check_checkpoint(P, ckpt, str(args.model), sampling=False)
    model, sched, ckpt = build_model_from_checkpoint(ckpt, device)
    c = P.residuals
    chi, spikes = run(model, sched, to_model(val_x).to(device), ckpt["history"], int(ckpt["n_train"]),
                      n_t=c.n_t, draws_per_t=c.draws_per_t, alpha=c.alpha, seed=P.seed, out=args.out)
    print("residuals:", chi.reading())
    print("residuals:", spikes.reading())


if __name__ == "__main__":
    main()

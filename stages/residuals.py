"""Stage `residuals`: the chi-squared check of eps - eps_theta on the validation split, loss by timestep, loss-spike ratio."""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ddpmlab.residuals import check as R
from ddpmlab.config import ResidualsConfig, load_params
from ddpmlab.errors import DataError, ParamError
from ddpmlab.data.images import to_model
from ddpmlab.io import write_json
from ddpmlab.data.splits import load_split
from ddpmlab.residuals.plots import plot_all
from ddpmlab.device import resolve_device
from ddpmlab.training.loop import build_model_from_checkpoint, load_checkpoint


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", required=True, type=Path, help="trained model (train stage)")
    ap.add_argument("--val", required=True, type=Path, help="prepared val.npz")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = ap.parse_args(argv)
    try:
        cfg = ResidualsConfig.from_params(load_params(args.params))
        val_x = load_split(args.val)
    except (ParamError, DataError) as e:
        sys.exit(f"residuals: {e}")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.model)
    model, sched, ckpt = build_model_from_checkpoint(ckpt, device)

    t, r = R.collect_residuals(model, sched, to_model(val_x).to(device), cfg.t_bins, cfg.draws_per_bin, cfg.seed)
    edges = R.bin_edges(sched.T, cfg.t_bins)
    chi, z, ms = R.chi_squared_check(r, t, edges, cfg)
    sigma2_t = R.loss_curve(edges, ms, t, sched.T)
    train_losses = [h["train/loss"] for h in ckpt["history"]]
    spikes = R.spike_check(train_losses, sigma2_t, chi.D, int(ckpt["n_train"]), cfg.spike_ratio_max)
    val_losses = [h["val/loss"] for h in ckpt["history"] if "val/loss" in h]

    args.out.mkdir(parents=True, exist_ok=True)
    by_bin = pd.DataFrame({"t_lo": edges[:-1] + 1, "t_hi": edges[1:], "t_mid": (edges[:-1] + edges[1:] + 1) / 2, "val_loss": ms})
    by_bin.to_csv(args.out / "loss_by_t.csv", index=False, float_format="%.6g")
    plot_all(z, r, t, edges, ms, chi, spikes, train_losses, args.out, seed=cfg.seed)
    metrics = R.metrics(chi, spikes)
    metrics["val_loss_epoch_std"] = R.observed_epoch_std(val_losses)
    write_json(args.out / "metrics.json", metrics)
    print("residuals:", chi.reading())
    print("residuals:", spikes.reading())


if __name__ == "__main__":
    main()

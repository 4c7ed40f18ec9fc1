"""Stage `sweep`: FID, KID, precision and recall against the number of sampling steps (DDIM eta 0 and 1, optionally DDPM).
T, the schedule and the network come from the checkpoint; params.yaml disagreeing with it is an error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ddpmlab.core.checkpoint import build_sampler_from_checkpoint, load_checkpoint
from ddpmlab.core.device import FastDenoiser, resolve_device
from ddpmlab.core.metrics import Extractor
from ddpmlab.core.sweep import run_sweep, summary, sweep_specs
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.configs import check_checkpoint
from ddpmlab.pipeline.data.splits import load_features
from ddpmlab.pipeline.features import inception_extractor, metric_spec
from ddpmlab.pipeline.io import save_csv, write_json
from ddpmlab.pipeline.schema import load_params


def plot(df: pd.DataFrame, path: Path) -> Path:
    """FID, KID ± std and precision/recall against the number of sampling steps (log axis)."""
    from ddpmlab.pipeline import figures as plotting

    fig, axes = plotting.plt.subplots(1, 3, figsize=(14, 3.8))
    for (sampler, eta), g in df.groupby(["sampler", "eta"]):
        name = f"DDIM eta={eta:g}" if sampler == "ddim" else "DDPM (all T steps)"
        style = "o-" if sampler == "ddim" else "s"
        axes[0].plot(g["steps"], g["fid"], style, label=name)
        axes[1].errorbar(g["steps"], g["kid"], yerr=g["kid_std"], fmt=style, capsize=3, label=name)
        line = axes[2].plot(g["steps"], g["precision"], style, label=f"{name}: precision")[0]
        axes[2].plot(g["steps"], g["recall"], style.replace("-", "--"), color=line.get_color(), mfc="none", label=f"{name}: recall")
    r = df.iloc[0]
    for ax, name in zip(axes, ("FID", "KID", f"precision / recall (k = {int(r['prc_k'])})")):
        ax.set_xscale("log")
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[2].set_ylim(-0.03, 1.03)
    axes[0].set_title(f"{int(r['n_generated'])} samples vs {int(r['n_reference'])} reference images", fontsize=9)
    return plotting.save(fig, path)


def sweep_checkpoint(ckpt: dict, P, extract: Extractor, ref: np.ndarray, device) -> pd.DataFrame:
    """The sweep of a trained checkpoint (`core.checkpoint.load_checkpoint`) with the settings of a
    validated params.yaml (`schema.Params`: sweep, seed, sample.batch_size and guidance, evaluate's KID and k).
    T, schedule and image shape come from the checkpoint; params disagreeing with it raise CheckpointMismatch."""
    check_checkpoint(P, ckpt, "the checkpoint")
    model, sched, _ = build_sampler_from_checkpoint(ckpt, device, P.sample.guidance)  # the pipeline's own denoiser
    mc = ckpt["model_config"]
    sw = P.sweep
    return run_sweep(FastDenoiser(model, device), sched, (mc["in_channels"], mc["image_size"], mc["image_size"]),
                     sweep_specs(sw.steps, sw.etas, sw.ddpm, sched.T), sw.n_samples, P.sample.batch_size, P.seed, extract, ref,
                     metric_spec(P), device)


@dataclass
class SweepOutputs:
    table: Path
    figure: Path
    metrics: Path


def write(df: pd.DataFrame, out: Path) -> SweepOutputs:
    """sweep.csv (the DVC plot), sweep.png and metrics.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    o = SweepOutputs(out / "sweep.csv", out / "sweep.png", out / "metrics.json")
    save_csv(df, o.table, index=False, float_format="%.6g")
    plot(df, o.figure)
    write_json(o.metrics, summary(df))
    return o


@command("sweep")
def main(argv=None):
    ap = stage_parser(__doc__, device=True)
    ap.add_argument("--model", required=True, type=Path, help="trained model (train stage)")
    ap.add_argument("--reference", required=True, type=Path, help="reference features .npz (reference stage)")
    ap.add_argument("--weights", required=True, type=Path, help="converted Inception weights (inception stage)")
    ap.add_argument("--out", required=True, type=Path, help="folder for sweep.csv, sweep.png, metrics.json")
    args = ap.parse_args(argv)
    P = load_params(args.params)
    device = resolve_device(args.device)
    ref = load_features(args.reference)  # before the weights: cheap first
    extract = inception_extractor(P, args.weights, device)
    df = sweep_checkpoint(load_checkpoint(args.model), P, extract, ref, device)
    write(df, args.out)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()

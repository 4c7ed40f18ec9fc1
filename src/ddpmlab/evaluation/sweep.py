"""The sampler sweep: sample quality against the number of sampling steps (the DDIM paper's Table 1, small).

One row per sampler setting (DDIM with each step count and eta, optionally DDPM with all T steps):
FID, KID ± std, precision and recall of `n` samples against the reference features, and the
sampling time. Every setting draws the same initial noise (image i depends only on (seed, i)), so
rows differ only by the sampler.

T, the schedule and the network come from the checkpoint (`training.checkpoint.build_model_from_checkpoint`);
`run_sweep` takes any denoiser and any feature extractor, so tests need neither a trained model
nor Inception weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ddpmlab.device import FastDenoiser
from ddpmlab.diffusion.generate import generate
from ddpmlab.diffusion.sampling import SamplerSpec
from ddpmlab.diffusion.schedule import Schedule
from ddpmlab.evaluation.metrics import Extractor, MetricSpec, feature_metrics
from ddpmlab.io import write_json
from ddpmlab.training.checkpoint import build_sampler_from_checkpoint, schedule_mismatch

COLUMNS = ["sampler", "steps", "eta", "fid", "kid", "kid_std", "precision", "recall", "prc_k",
           "n_generated", "n_reference", "kid_subset_size", "seconds"]


class CheckpointMismatch(ValueError):
    """params.yaml's T or schedule differ from those the checkpoint was trained with (one line)."""


def sweep_specs(steps: Sequence[int], etas: Sequence[float], ddpm: bool, T: int) -> list[SamplerSpec]:
    """DDIM at every (eta, step count), each once and in ascending order, then DDPM (all T steps) if asked.

    Step counts above T would silently repeat the T-step row; they are refused (params.yaml's schema
    refuses them against params T, this against the checkpoint's T)."""
    too_many = sorted(s for s in set(steps) if s > T)
    if too_many:
        raise CheckpointMismatch(f"sweep.steps {too_many} exceed the checkpoint's T = {T}")
    out = [SamplerSpec("ddim", int(s), float(e)) for e in sorted(set(float(e) for e in etas)) for s in sorted(set(steps))]
    if ddpm:
        out.append(SamplerSpec("ddpm", T))
    return out


def run_sweep(model, sched: Schedule, shape: tuple, specs: list[SamplerSpec], n: int, batch: int, seed: int,
              extract: Extractor, ref: np.ndarray, metrics: MetricSpec, device="cpu") -> pd.DataFrame:
    """One row per spec (columns COLUMNS). model: eps_theta(x [B, C, H, W], t [B]); shape: [C, H, W];
    extract: uint8 [N, H, W, C] -> features [N, D]; ref: reference features [N_r, D]."""
    rows = []
    for spec in specs:
        g = generate(model, sched, spec, n, batch, seed, shape, device, desc=f"sweep {spec.steps if spec.sampler == 'ddim' else sched.T} steps")
        m = feature_metrics(extract(g.images), ref, metrics)
        rows.append({"sampler": spec.sampler, "steps": g.steps, "eta": spec.eta if spec.sampler == "ddim" else 1.0, **m, "seconds": g.seconds})
    return pd.DataFrame(rows)[COLUMNS]


def best(df: pd.DataFrame) -> pd.Series:
    """The row with the lowest KID (KID, unlike FID, is unbiased at these N)."""
    return df.loc[df["kid"].idxmin()]


def label(row) -> str:
    return f"{row['sampler']} steps={int(row['steps'])}" + (f" eta={row['eta']:g}" if row["sampler"] == "ddim" else "")


def summary(df: pd.DataFrame) -> dict:
    """The sweep's metrics.json: the best setting by KID with its precision/recall, and the sizes used."""
    b = best(df)
    return {"best_kid": b["kid"], "best_kid_std": b["kid_std"], "best_kid_sampler": label(b), "best_precision": b["precision"],
            "best_recall": b["recall"], "prc_k": int(b["prc_k"]), "n_generated": int(b["n_generated"]),
            "n_reference": int(b["n_reference"]), "configs": len(df)}


def plot(df: pd.DataFrame, path: Path) -> Path:
    """FID, KID ± std and precision/recall against the number of sampling steps (log axis)."""
    from ddpmlab.reporting import plotting

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
    """The sweep of a trained checkpoint (`training.checkpoint.load_checkpoint`) with the settings of a
    validated params.yaml (`schema.Params`: sweep, seed, sample.batch_size and guidance, evaluate's KID and k).
    T, schedule and image shape come from the checkpoint; params disagreeing with it raise CheckpointMismatch."""
    s = P.schedule
    if msg := schedule_mismatch(ckpt["schedule_config"], P.T, s.name, s.beta_start, s.beta_end, "the checkpoint"):
        raise CheckpointMismatch(msg)
    model, sched, _ = build_sampler_from_checkpoint(ckpt, device, P.sample.guidance)  # the pipeline's own denoiser
    mc = ckpt["model_config"]
    sw, ev = P.sweep, P.evaluate
    return run_sweep(FastDenoiser(model, device), sched, (mc["in_channels"], mc["image_size"], mc["image_size"]),
                     sweep_specs(sw.steps, sw.etas, sw.ddpm, sched.T), sw.n_samples, P.sample.batch_size, P.seed, extract, ref,
                     MetricSpec(ev.kid_subsets, ev.kid_subset_size, ev.prc_k, P.seed), device)


@dataclass
class SweepOutputs:
    table: Path
    figure: Path
    metrics: Path


def write(df: pd.DataFrame, out: Path) -> SweepOutputs:
    """sweep.csv (the DVC plot), sweep.png and metrics.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    o = SweepOutputs(out / "sweep.csv", out / "sweep.png", out / "metrics.json")
    df.to_csv(o.table, index=False, float_format="%.6g")
    plot(df, o.figure)
    write_json(o.metrics, summary(df))
    return o

"""The sampler sweep: sample quality against the number of sampling steps (the DDIM paper's Table 1, small).

One row per sampler setting (DDIM with each step count and eta, optionally DDPM with all T steps):
FID, KID ± std, precision and recall of `n` samples against the reference features, and the
sampling time. Every setting draws the same initial noise (image i depends only on (seed, i)), so
rows differ only by the sampler.

T, the schedule and the network come from the checkpoint (`core.checkpoint.build_model_from_checkpoint`);
`run_sweep` takes any denoiser and any feature extractor, so tests need neither a trained model
nor Inception weights.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ddpmlab.core.checkpoint import CheckpointMismatch
from ddpmlab.core.generate import generate
from ddpmlab.core.metrics import Extractor, MetricSpec, feature_metrics
from ddpmlab.core.sampling import SamplerSpec
from ddpmlab.core.schedule import Schedule

COLUMNS = ["sampler", "steps", "eta", "fid", "kid", "kid_std", "precision", "recall", "prc_k",
           "n_generated", "n_reference", "kid_subset_size", "seconds"]


def sweep_specs(steps: Sequence[int], etas: Sequence[float], ddpm: bool, T: int) -> list[SamplerSpec]:
    """DDIM at every (eta, step count), each once and in ascending order, then DDPM (all T steps) if asked.

    Step counts above T would silently repeat the T-step row; they are refused against the checkpoint's T."""
    too_many = sorted(s for s in set(steps) if s > T)
    if too_many:
        raise CheckpointMismatch(f"DDIM step counts {too_many} exceed the checkpoint's T = {T}")
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









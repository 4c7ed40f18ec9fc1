"""Matplotlib set-up shared by the stages: a headless backend and one way to save figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless (CI, dvc exp queue workers)
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # fixed metadata so identical figures give identical bytes (DVC hashes them)
    fig.savefig(path, dpi=110, metadata={"Software": None} if path.suffix == ".png" else None)
    plt.close(fig)
    return path


def loss_curves(history: list, path: str | Path) -> Path:
    """Train loss per epoch and validation loss (EMA and raw weights) where measured."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot([r["epoch"] + 1 for r in history], [r["train/loss"] for r in history], lw=1, label="train (random t, noise)")
    for key, label in (("val/loss", "validation, EMA weights (fixed t, noise)"), ("val/loss_raw", "validation, raw weights")):
        pts = [(r["epoch"] + 1, r[key]) for r in history if key in r]
        if pts:
            ax.plot(*zip(*pts), "o-", ms=3, lw=1, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE on eps")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, path)

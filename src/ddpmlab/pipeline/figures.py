"""Matplotlib set-up shared by the stages: a headless backend and one way to save figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless (CI, dvc exp queue workers)
import matplotlib.pyplot as plt  # noqa: E402

from ddpmlab.core.files import atomic_path


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    # fixed metadata so identical figures give identical bytes (DVC hashes them)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, metadata={"Software": None} if path.suffix == ".png" else None)
    plt.close(fig)
    return path

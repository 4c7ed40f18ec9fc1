"""The prepared splits on disk: the one format every stage after `prepare` reads.

Kept apart from prepare.py so that editing how images are prepared reruns `prepare` (and, through
its outputs, whatever changes), not every stage that merely reads an .npz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddpmlab.errors import DataError


def load_split(path: Path) -> np.ndarray:
    """uint8 [N, H, W, C] from a prepared .npz (C = 3, or 1 for grey-scale data)."""
    if not Path(path).is_file():
        raise DataError(f"{path} not found: run `dvc repro prepare` first")
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path} is not a prepared split ({type(e).__name__}: {e}); rerun `dvc repro prepare`") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DataError(f"{path}: images must be uint8 [N, H, W, C], got {images.dtype} {list(images.shape)}; rerun `dvc repro prepare`")
    return images


def load_array(path: Path, key: str) -> np.ndarray:
    """One array of an .npz another stage wrote (samples, Inception features); DataError (one line) if missing or unreadable."""
    if not Path(path).is_file():
        raise DataError(f"{path} not found: run `dvc repro` for the stage that writes it")
    try:
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path} cannot be read ({type(e).__name__}: {e}); rerun the stage that writes it") from None

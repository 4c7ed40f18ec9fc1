"""Small shared helpers for stage outputs: JSON files and how reports print a value."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ddpmlab.core.files import atomic_path, write_text


def _clean(obj):
    """JSON-safe: NaN/inf become null (json.dumps would write invalid JSON), numpy scalars become Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj, sort_keys: bool = True) -> Path:
    return write_text(path, json.dumps(_clean(obj), indent=1, sort_keys=sort_keys) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def fmt(v, digits: int = 4) -> str:
    """A value as the markdown reports print it: yes/no, n/a for missing or non-finite, `digits` significant."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else "n/a"
    return "n/a" if v is None else str(v)


def save_npz(path: str | Path, **arrays) -> Path:
    """np.savez_compressed, atomically (core.files)."""
    import numpy as np

    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return Path(path)


def save_image(image, path: str | Path) -> Path:
    """A PIL image (format from the suffix), atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp)
    return Path(path)


def save_csv(frame, path: str | Path, **kwargs) -> Path:
    """A pandas DataFrame as CSV (DataFrame.to_csv's keywords), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
    return Path(path)

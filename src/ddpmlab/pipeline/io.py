"""Small shared helpers for stage outputs: JSON files and how reports print a value."""

from __future__ import annotations

import json
import math
from pathlib import Path


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


def write_json(path: str | Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(obj), indent=1, sort_keys=True) + "\n")
    return path


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def fmt(v, digits: int = 4) -> str:
    """A value as the markdown reports print it: yes/no, n/a for missing or non-finite, `digits` significant."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else "n/a"
    return "n/a" if v is None else str(v)

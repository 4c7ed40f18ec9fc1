import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the code in this checkout, even if another copy is installed


def blob_images(n: int, size: int = 40, seed: int = 0) -> list[Image.Image]:
    """Synthetic 'artwork': one coloured ellipse on white per image, varied sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = int(rng.integers(size - 8, size + 8)), int(rng.integers(size - 8, size + 8))
        im = Image.new("RGB", (w, h), "white")
        d = ImageDraw.Draw(im)
        x0, y0 = rng.integers(2, w // 3), rng.integers(2, h // 3)
        d.ellipse([x0, y0, w - rng.integers(2, w // 3), h - rng.integers(2, h // 3)], fill=tuple(int(c) for c in rng.integers(0, 200, 3)))
        out.append(im)
    return out


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(blob_images(12)):
        im.save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture
def params() -> dict:
    with open(ROOT / "params.yaml") as f:
        return yaml.safe_load(f)

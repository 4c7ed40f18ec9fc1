import functools
import subprocess
import sys
import tempfile
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


@functools.cache
def committed_params_text() -> str:
    """params.yaml as committed at HEAD. Tests never read the working file: `dvc exp run` rewrites it."""
    r = subprocess.run(["git", "-C", str(ROOT), "show", "HEAD:params.yaml"], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"tests read params.yaml as committed (git show HEAD:params.yaml), which failed: {r.stderr.strip()}")
    return r.stdout


def committed_params() -> dict:
    """A fresh dict of the committed params.yaml (callers may change it)."""
    return yaml.safe_load(committed_params_text())


@functools.cache
def committed_params_file() -> Path:
    """The committed params.yaml written to a private folder, for code that takes a path."""
    path = Path(tempfile.mkdtemp(prefix="ddpmlab-params-")) / "params.yaml"
    path.write_text(committed_params_text())
    return path


@pytest.fixture
def params() -> dict:
    return committed_params()


def train_one_thread(setup, train_x, val_x, d: Path) -> Path:
    """core.training.train into d (state.pt, model.pt) on one torch thread, silently: the fixtures' tiny models."""
    import torch

    from ddpmlab.core.training import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(setup, train_x, val_x, d / "state.pt", d / "model.pt", say=lambda *a: None)
    finally:
        torch.set_num_threads(threads)
    return d / "model.pt"

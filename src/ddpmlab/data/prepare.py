"""Preprocessing: decode, convert to RGB, square, resize, split.

As in the seed notebooks: square the image (centre crop, or pad on white for artwork), resize
with an antialiased bilinear filter to `image_size`, and split deterministically into train and
validation by `seed`. Unreadable files are skipped and counted, never a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddpmlab.config import SQUARE_MODES, _choice, _float, _int, get
from ddpmlab.data.splits import load_split  # noqa: F401  (re-exported: the old import path keeps working)
from ddpmlab.errors import DataError, ParamError

WHITE = (255, 255, 255)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency (RGBA, LA, palette with alpha) is composited on white."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGB" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if im.mode != "RGB":
        # I;16 and I grayscale scale to 8 bits first; PIL's convert would clip them
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.float64)
            a = (a / max(a.max(), 1) * 255).round().astype(np.uint8)
            im = Image.fromarray(a, "L")
        im = im.convert("RGB")
    return im


def make_square(im: Image.Image, mode: str) -> Image.Image:
    """pad: centre on a white square of side max(w, h); crop: the centre square of side min(w, h)."""
    w, h = im.size
    if mode == "pad":
        s = max(w, h)
        out = Image.new("RGB", (s, s), WHITE)
        out.paste(im, ((s - w) // 2, (s - h) // 2))
        return out
    if mode == "crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return im.crop((left, top, left + s, top + s))
    raise ParamError("prepare.square", mode, f"one of {', '.join(SQUARE_MODES)}")


def load_image(path: Path, size: int, square: str) -> tuple[np.ndarray, tuple[int, int]]:
    """One file -> uint8 [size, size, 3] and its raw (width, height). Raises OSError/ValueError if unreadable."""
    with Image.open(path) as im:
        im.load()
        raw = im.size
        im = make_square(to_rgb(im), square)
    # Pillow's BILINEAR widens its kernel when downscaling, i.e. it is antialiased
    im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8), raw


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split of range(n); both sides non-empty. Sorted index arrays."""
    if n < 2:
        raise DataError(f"need at least 2 usable images to split into train and validation, found {n}")
    n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclass
class Prepared:
    train: np.ndarray
    val: np.ndarray
    train_names: list
    val_names: list
    stats: dict = field(default_factory=dict)
    raw_sizes: list = field(default_factory=list)


def prepare_folder(images_dir: Path, image_size: int, square: str, val_fraction: float, seed: int) -> Prepared:
    """Every file of `images_dir` (sorted by name, so the result does not depend on the file system)."""
    files = sorted(p for p in images_dir.iterdir() if p.is_file()) if images_dir.is_dir() else []
    if not files:
        raise DataError(f"{images_dir} holds no files: run the download stage first")
    arrays, names, raw_sizes, skipped = [], [], [], {}
    for p in files:
        try:
            a, raw = load_image(p, image_size, square)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            skipped[p.name] = f"{type(e).__name__}: {e}"[:200]
            continue
        arrays.append(a)
        names.append(p.name)
        raw_sizes.append(raw)
    tr, va = split_indices(len(arrays), val_fraction, seed)
    x = np.stack(arrays)
    stats = {
        "files": len(files),
        "used": len(arrays),
        "skipped": len(skipped),
        "skipped_files": skipped,
        "train": int(len(tr)),
        "val": int(len(va)),
        "image_size": image_size,
        "square": square,
        "raw_width_median": float(np.median([w for w, _ in raw_sizes])),
        "raw_height_median": float(np.median([h for _, h in raw_sizes])),
        "pixel_mean": [float(v) for v in x.reshape(-1, 3).mean(0) / 255],
    }
    return Prepared(x[tr], x[va], [names[i] for i in tr], [names[i] for i in va], stats, raw_sizes)


def prepare_from_params(params: dict, images_dir: Path) -> Prepared:
    return prepare_folder(
        images_dir,
        image_size=_int(params, "prepare.image_size", lo=8),
        square=_choice(params, "prepare.square", SQUARE_MODES),
        val_fraction=_float(params, "prepare.val_fraction", 0, 1, lo_open=True, hi_open=True),
        seed=_int(params, "seed"),
    )


def save_prepared(prep: Prepared, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "train.npz", images=prep.train, names=np.array(prep.train_names))
    np.savez_compressed(out_dir / "val.npz", images=prep.val, names=np.array(prep.val_names))


def write_reports(prep: Prepared, out_dir: Path) -> None:
    """stats.json, a contact sheet of the training split, a scatter of raw sizes."""
    from ddpmlab.reporting import plotting
    from ddpmlab.data.images import grid

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stats.json").write_text(json.dumps(prep.stats, indent=1, sort_keys=True))
    grid(prep.train[:256], pad=1, scale=2 if prep.train.shape[1] <= 32 else 1).save(out_dir / "contact_sheet.png")
    fig, ax = plotting.plt.subplots(figsize=(4.5, 4))
    w, h = np.array(prep.raw_sizes).T
    ax.scatter(w, h, s=10, alpha=0.6)
    ax.set_xlabel("raw width (px)")
    ax.set_ylabel("raw height (px)")
    ax.set_title(f"raw image sizes (n={len(w)}, skipped {prep.stats['skipped']})")
    plotting.save(fig, out_dir / "raw_sizes.png")

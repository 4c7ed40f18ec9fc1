"""Preprocessing: decode, convert to RGB, square, resize, split.

As is usual for artwork sets: square the image (centre crop, or pad on white for artwork), resize
with an antialiased bilinear filter to `image_size`, and split deterministically into train and
validation by `seed`. Unreadable files are skipped and counted, never a crash. Arrays are
uint8 [N, size, size, C]: C = 1 when every image is grey (MNIST, Fashion-MNIST), else 3.

Safe on any input: the size in an image's header is checked before anything is decoded. Images
with more than `max_megapixels` (after a JPEG's free 1/2..1/8 DCT downscaling on decode) or a long
side above `max_aspect_ratio` short sides are skipped with their reason, and Pillow's
decompression-bomb warning is an error. No canvas above `max_megapixels` is ever allocated (a long,
thin image is resized before it is padded), so peak memory is a few copies of an image of at most
`max_megapixels`, whatever the files claim. EXIF orientation is applied.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ddpmlab.core.errors import DataError
from ddpmlab.core.files import write_text
from ddpmlab.core.streams import Stream, numpy_rng
from ddpmlab.pipeline.io import save_image, save_npz
from ddpmlab.pipeline.schema import SQUARE_MODES, ParamError

WHITE = (255, 255, 255)
MAX_MEGAPIXELS = 40.0  # defaults of params prepare.max_megapixels / prepare.max_aspect_ratio
MAX_ASPECT_RATIO = 10.0


class ImageRejected(ValueError):
    """An image refused by its header (size, aspect ratio) before it was decoded."""


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")  # 16-bit grey (PNG opens it as I;16 or I): levels 0..65535


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB with the levels it means. Transparency (RGBA, LA, PA, a palette or a grey or RGB
    image with a transparent value) is composited on white; 16-bit grey is scaled by 255/65535 (a fixed scale,
    so a dark image stays dark), which PIL's convert would clip instead."""
    if im.mode in SIXTEEN_BIT:
        a = np.clip(np.asarray(im, dtype=np.float64), 0, 65535)
        transparent = im.info.get("transparency")
        grey = Image.fromarray((a / 257.0).round().astype(np.uint8), "L")
        if isinstance(transparent, int):  # a tRNS grey level: those pixels are transparent
            alpha = Image.fromarray(np.where(np.asarray(im) == transparent, 0, 255).astype(np.uint8), "L")
            im = Image.merge("LA", (grey, alpha))
        else:
            im = grey
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode in ("RGB", "L") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def make_square(im: Image.Image, mode: str) -> Image.Image:
    """pad: centre on a white square of side max(w, h); crop: the centre square of side min(w, h).

    Allocates the square at full size: load_image goes through square_resize, which bounds it.
    """
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
    raise ValueError(f"square mode {mode!r}: one of {', '.join(SQUARE_MODES)}")


def square_resize(im: Image.Image, size: int, mode: str, max_pixels: float = MAX_MEGAPIXELS * 1e6) -> Image.Image:
    """RGB image -> size x size RGB, squared by `mode`, never allocating more than `max_pixels` pixels.

    crop: the centre square (at most the image itself), resized.
    pad:  the image centred on a white max(w, h)^2 square, resized; when
          that square would exceed `max_pixels` (a long, thin image), the image is resized first
          (long side -> `size`) and then centred on a white size x size square instead: the same
          picture up to the antialiasing at the border, with memory bounded by the output.
    Pillow's BILINEAR widens its kernel when downscaling, i.e. it is antialiased.
    """
    w, h = im.size
    if mode != "pad" or max(w, h) ** 2 <= max_pixels:  # crop (or an unknown mode, which make_square refuses)
        return make_square(im, mode).resize((size, size), Image.BILINEAR)
    s = max(w, h)
    nw, nh = max(1, round(w * size / s)), max(1, round(h * size / s))
    out = Image.new("RGB", (size, size), WHITE)
    out.paste(im.resize((nw, nh), Image.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    return out


def check_header(w: int, h: int, max_pixels: float, max_aspect: float) -> None:
    """Refuse degenerate sizes and extreme aspect ratios from the header alone (ImageRejected)."""
    if w < 1 or h < 1:
        raise ImageRejected(f"{w}x{h} pixels: empty image")
    if max(w, h) > max_aspect * min(w, h):
        raise ImageRejected(f"{w}x{h} pixels: aspect ratio {max(w, h) / min(w, h):.3g} exceeds prepare.max_aspect_ratio = {max_aspect:g}")


def load_image(path: Path, size: int, square: str, max_megapixels: float = MAX_MEGAPIXELS,
               max_aspect_ratio: float = MAX_ASPECT_RATIO) -> tuple[np.ndarray, tuple[int, int]]:
    """One file -> uint8 [size, size, 3] and its raw (width, height) from the header.

    Raises ImageRejected (size or aspect ratio, checked before decoding) or whatever the decoder
    raises for a broken file; prepare_folder skips and counts both.
    """
    max_pixels = max_megapixels * 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # 89-179 MP: Pillow only warns
        try:
            opened = Image.open(path)  # reads the header only
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ImageRejected(f"refused by Pillow's decompression-bomb check: {e}") from None
        with opened as im:
            raw = im.size
            check_header(*raw, max_pixels, max_aspect_ratio)
            if raw[0] * raw[1] > max_pixels and im.format == "JPEG":
                # DCT scaling on decode (1/2, 1/4, 1/8): the full-size image is never allocated
                k = next((k for k in (2, 4, 8) if math.ceil(raw[0] / k) * math.ceil(raw[1] / k) <= max_pixels), 8)
                im.draft(im.mode if im.mode in ("L", "RGB") else None, (math.ceil(raw[0] / k), math.ceil(raw[1] / k)))
            if im.size[0] * im.size[1] > max_pixels:
                raise ImageRejected(f"{raw[0]}x{raw[1]} pixels = {raw[0] * raw[1] / 1e6:.1f} MP exceeds prepare.max_megapixels = {max_megapixels:g}")
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # cameras store portraits sideways plus an orientation tag; in place: no extra copy
            im = square_resize(to_rgb(im), size, square, max_pixels)
    return np.asarray(im, dtype=np.uint8), raw


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split of range(n); both sides non-empty. Sorted index arrays."""
    if n < 2:
        raise DataError(f"need at least 2 usable images to split into train and validation, found {n}")
    n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    perm = numpy_rng(seed, Stream.SPLIT).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclass
class Prepared:
    train: np.ndarray
    val: np.ndarray
    train_names: list
    val_names: list
    stats: dict = field(default_factory=dict)
    raw_sizes: list = field(default_factory=list)


def prepare_folder(images_dir: Path, image_size: int, square: str, val_fraction: float, seed: int,
                   max_megapixels: float = MAX_MEGAPIXELS, max_aspect_ratio: float = MAX_ASPECT_RATIO) -> Prepared:
    """Every file of `images_dir` (sorted by name, so the result does not depend on the file system).
    The square mode is checked here, once: a bad mode inside the loop would read as a bad file."""
    if square not in SQUARE_MODES:
        raise ParamError("prepare.square", square, f"one of {', '.join(SQUARE_MODES)}")
    files = sorted(p for p in images_dir.iterdir() if p.is_file()) if images_dir.is_dir() else []
    if not files:
        raise DataError(f"{images_dir} holds no files: run the download stage first")
    arrays, names, raw_sizes, skipped = [], [], [], {}
    for p in files:
        try:
            a, raw = load_image(p, image_size, square, max_megapixels, max_aspect_ratio)
        except MemoryError:
            skipped[p.name] = "MemoryError: too large to decode on this machine"
            continue
        except Exception as e:  # noqa: BLE001  any decoder failure (OSError, SyntaxError, struct.error, ...) is a bad file, not a bug
            skipped[p.name] = f"{type(e).__name__}: {e}"[:200]
            continue
        arrays.append(a)
        names.append(p.name)
        raw_sizes.append(raw)
    tr, va = split_indices(len(arrays), val_fraction, seed)
    x = np.stack(arrays)  # [N, size, size, 3]
    # One channel stays one channel: grey sources (MNIST's mode-L PNGs) decode to R = G = B exactly,
    # also after padding on white and resizing, so when every image is grey one channel holds all
    # of it and the arrays become [N, size, size, 1] (the U-Net's in_channels follows the data)
    if (x[..., :1] == x).all():
        x = x[..., :1]
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
        "channels": int(x.shape[-1]),
        "pixel_mean": [float(v) for v in x.reshape(-1, x.shape[-1]).mean(0) / 255],
    }
    return Prepared(x[tr], x[va], [names[i] for i in tr], [names[i] for i in va], stats, raw_sizes)


def prepare_from_params(params, images_dir: Path) -> Prepared:
    """`params`: the validated Params (schema): prepare.* and seed."""
    p = params.prepare
    return prepare_folder(images_dir, p.image_size, p.square, p.val_fraction, params.seed,
                          max_megapixels=p.max_megapixels, max_aspect_ratio=p.max_aspect_ratio)


def save_prepared(prep: Prepared, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_npz(out_dir / "train.npz", images=prep.train, names=np.array(prep.train_names))
    save_npz(out_dir / "val.npz", images=prep.val, names=np.array(prep.val_names))


def write_reports(prep: Prepared, out_dir: Path) -> None:
    """stats.json, a contact sheet of the training split, a scatter of raw sizes."""
    from ddpmlab.core.images import grid
    from ddpmlab.pipeline import figures as plotting

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "stats.json", json.dumps(prep.stats, indent=1, sort_keys=True))
    save_image(grid(prep.train[:256], pad=1, scale=2 if prep.train.shape[1] <= 32 else 1), out_dir / "contact_sheet.png")
    fig, ax = plotting.plt.subplots(figsize=(4.5, 4))
    w, h = np.array(prep.raw_sizes).T
    ax.scatter(w, h, s=10, alpha=0.6)
    ax.set_xlabel("raw width (px)")
    ax.set_ylabel("raw height (px)")
    ax.set_title(f"raw image sizes (n={len(w)}, skipped {prep.stats['skipped']})")
    plotting.save(fig, out_dir / "raw_sizes.png")

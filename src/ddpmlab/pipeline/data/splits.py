"""The prepared splits on disk: the one format every stage after `prepare` reads.

Kept apart from prepare.py so that editing how images are prepared reruns `prepare` (and, through
its outputs, whatever changes), not every stage that merely reads an .npz.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ddpmlab.core.errors import DataError

MAX_ARRAY_BYTES = 4 << 30  # an array that declares more is refused before anything is allocated (the default's arrays: < 10 MB)


def read_array(path: Path, key: str) -> np.ndarray:
    """Array `key` of an .npz, read safely: no pickles; the header's shape and dtype checked (no negative or zero-width
    sizes; no more bytes than the archive member holds, nor than MAX_ARRAY_BYTES) before numpy allocates; the member
    checked is the one read (np.load would prefer a member named exactly `key` over `key.npy`); every failure, corrupt
    compressed data included, one DataError line. Callers add what to do about it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found")
    try:
        with zipfile.ZipFile(path) as zf:
            member = f"{key}.npy"
            if member not in zf.namelist():
                names = sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
                raise DataError(f"{path}: no array {key!r} (has {names})")
            info = zf.getinfo(member)
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = header(f)
            if dtype.hasobject:
                raise DataError(f"{path}: array {key!r} holds Python objects (a pickle), which are never loaded")
            if any(d < 0 for d in shape) or (dtype.itemsize == 0 and 0 not in shape):
                raise DataError(f"{path}: array {key!r} declares an impossible shape {list(shape)} of {dtype}")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > MAX_ARRAY_BYTES:
                raise DataError(f"{path}: array {key!r} declares {list(shape)} {dtype} ({nbytes:,} bytes), over the "
                                f"{MAX_ARRAY_BYTES:,}-byte limit of what a stage reads")
            if nbytes > info.file_size:
                raise DataError(f"{path}: array {key!r} declares {list(shape)} {dtype} ({nbytes:,} bytes) but the archive "
                                f"member holds only {info.file_size:,}")
            with zf.open(info) as f:  # the member just checked, read by numpy's own .npy reader
                return np.lib.format.read_array(f, allow_pickle=False)
    except DataError:
        raise
    except Exception as e:  # zipfile, zlib, struct and numpy raise many kinds for a corrupt file: all are one line here
        msg = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"{path}: not a readable .npz ({type(e).__name__}: {msg[:200]})") from None


def load_split(path: Path) -> np.ndarray:
    """uint8 [N, H, W, C] from a prepared .npz (C = 3, or 1 for grey-scale data)."""
    if not Path(path).is_file():
        raise DataError(f"{path} not found: run `dvc repro prepare` first")
    try:
        images = read_array(path, "images")
    except DataError as e:
        raise DataError(f"{e}; rerun `dvc repro prepare`") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DataError(f"{path}: images must be uint8 [N, H, W, C], got {images.dtype} {list(images.shape)}; rerun `dvc repro prepare`")
    return images


def load_array(path: Path, key: str) -> np.ndarray:
    """One array of an .npz another stage wrote (samples, Inception features); DataError (one line) if missing or unreadable."""
    if not Path(path).is_file():
        raise DataError(f"{path} not found: run `dvc repro` for the stage that writes it")
    try:
        return read_array(path, key)
    except DataError as e:
        raise DataError(f"{e}; rerun the stage that writes it") from None


MIN_IMAGES = 2  # FID's covariance, KID's subsets and precision/recall's k-th neighbour all need two of each


def load_images(path: Path, key: str = "images") -> np.ndarray:
    """Images another stage wrote (samples): uint8 [N, H, W, C], C = 1 or 3, N >= 2; else DataError naming the form."""
    images = load_array(path, key)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) < MIN_IMAGES:
        raise DataError(f"{path}: '{key}' must be uint8 images [N, H, W, C] with C = 1 or 3 and N >= {MIN_IMAGES}, "
                        f"got {images.dtype} {list(images.shape)}; rerun the stage that writes it")
    return images


def load_features(path: Path, key: str = "features") -> np.ndarray:
    """Features another stage wrote: finite floats [N, D], N >= 2; else DataError naming the form and the minimum."""
    f = load_array(path, key)
    if not np.issubdtype(f.dtype, np.floating) or f.ndim != 2 or len(f) < MIN_IMAGES:
        raise DataError(f"{path}: '{key}' must be float features [N, D] with N >= {MIN_IMAGES} (images of the split: a metric "
                        f"needs at least {MIN_IMAGES}), got {f.dtype} {list(f.shape)}; use more images or rerun the stage that writes it")
    if not np.all(np.isfinite(f)):
        raise DataError(f"{path}: '{key}' holds NaN or infinite values; rerun the stage that writes it")
    return f

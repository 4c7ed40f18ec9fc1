"""The prepared splits on disk: the one format every stage after `prepare` reads.

Kept apart from prepare.py so that editing how images are prepared reruns `prepare` (and, through
its outputs, whatever changes), not every stage that merely reads an .npz.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ddpmlab.errors import DataError

MAX_ARRAY_BYTES = 4 << 30  # an array that declares more is refused before anything is allocated (the default's arrays: < 10 MB)


def read_array(path: Path, key: str) -> np.ndarray:
    """Array `key` of an .npz, read safely: no pickles, the header's shape and dtype checked against the bytes the archive
    holds and against MAX_ARRAY_BYTES before numpy allocates, every failure one DataError line (a truncated or foreign
    file, a missing key, a header that claims terabytes). Callers add what to do about it."""
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
            with zf.open(member) as f:
                version = np.lib.format.read_magic(f)
                header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = header(f)
        if dtype.hasobject:
            raise DataError(f"{path}: array {key!r} holds Python objects (a pickle), which are never loaded")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if nbytes > min(info.file_size, MAX_ARRAY_BYTES):
            raise DataError(f"{path}: array {key!r} declares {list(shape)} {dtype} ({nbytes:,} bytes) but the archive holds "
                            f"{info.file_size:,} (limit {MAX_ARRAY_BYTES:,})")
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError, MemoryError) as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"{path}: not a readable .npz ({type(e).__name__}: {msg})") from None


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

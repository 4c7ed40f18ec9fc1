"""Atomic file output: every file the project writes goes through `atomic_path`.

The writer gets a temporary path in the same folder (so the rename cannot cross file systems), named
`.<stem>.<random>.partial<suffix>` so that writers choosing a format by suffix (numpy, Pillow, matplotlib)
still do. On success the temporary file is fsynced and renamed over the target, then the folder is
fsynced: a reader, or a run killed at any instant, sees the previous complete file or the new one,
never a truncated one. On an error the temporary file is removed and the target is untouched; an
OSError (no space, read-only, permission, a path that is a folder) becomes one line naming the path.
Temporary files left by a killed run (a kill cannot clean up) are removed by the next write of the same
target.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from ddpmlab.core.errors import UserError

PARTIAL = ".partial"


class OutputError(UserError, OSError):
    """An output file could not be written (one line: the path and the cause)."""


def partial_files(path: Path) -> list[Path]:
    """The temporary files of `path` that a killed writer left behind."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    name = re.compile(rf"\.{re.escape(path.stem)}\.[0-9a-f]{{8}}{re.escape(PARTIAL + path.suffix)}")
    return sorted(p for p in path.parent.iterdir() if name.fullmatch(p.name))


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened or synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):  # e.g. its folder could not be made: there is nothing to remove
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """`with atomic_path(p) as tmp: write(tmp)`: `p` is replaced by what was written to `tmp`, all at once."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}{PARTIAL}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in partial_files(path):
            stale.unlink(missing_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        _discard(tmp)
        if isinstance(e, UserError) or e.errno is None:  # a writer's own error (e.g. Pillow's encoder), not the file system
            raise
        raise OutputError(f"cannot write {path}: {e.strerror or type(e).__name__}"
                          f"{f' ({e.filename})' if e.filename and str(e.filename) not in (str(path), str(tmp)) else ''}") from None
    except BaseException:
        _discard(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)

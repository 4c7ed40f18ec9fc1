"""Resumable training state, one per experiment, keyed by everything that makes the experiment.

The resume key is a hash of
  * the parameters training reads, minus bookkeeping that cannot change the weights (`core.train_config.BOOKKEEPING`),
  * the prepared data (train and validation arrays),
  * the code: a fingerprint of the files the training code is made of, given by the caller (the
    pipeline passes the train stage's import closure, the same files its dvc.yaml deps list).
A run resumes only from a state with its own key, so a change to the pixel scaling, the U-Net,
a parameter or the data starts afresh instead of continuing another experiment's weights.

On disk (`StateFile`): the state file (e.g. `train_state.pt`) holds the state of the
experiment that ran last. When another experiment starts, that file is not overwritten but parked
beside it as `train_state.<key>.pt` (git-ignored, not a DVC output), and it moves back when its
experiment runs again, so an interrupted experiment survives any number of others. A file that
cannot be read is moved aside to `train_state.pt.corrupt-<UTC time>` with a one-line message, and
training starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ddpmlab.core.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint

KEY_RE = re.compile(r"[0-9a-f]{16}")


def data_fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def resume_key(experiment: dict, train_x: np.ndarray, val_x: np.ndarray, code: str) -> str:
    """16 hex digits naming one experiment: its params (`experiment`, JSON-able, bookkeeping already
    removed), its data and its code fingerprint."""
    payload = {"experiment": experiment, "data": data_fingerprint(train_x, val_x), "code": code}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class StateFile:
    """The resumable state of experiment `key`, at `path`, with other experiments' states parked beside it."""

    def __init__(self, path: Path, key: str, say: Callable[[str], None] = print):
        if not KEY_RE.fullmatch(key):
            raise ValueError(f"resume key must be 16 hex digits, got {key!r}")
        self.path, self.key, self.say = Path(path), key, say

    def parked(self, key: str) -> Path:
        """train_state.pt -> train_state.<key>.pt, beside it"""
        return self.path.with_name(f"{self.path.stem}.{key}{self.path.suffix}")

    def _aside(self, why: str) -> Path:
        """A fresh name for a file that is not a usable state: kept for inspection, never overwritten."""
        base = self.path.with_name(f"{self.path.name}.{why}-{_utc_stamp()}")
        dest, i = base, 1
        while dest.exists():
            dest, i = base.with_name(f"{base.name}-{i}"), i + 1
        return dest

    def prepare(self) -> dict | None:
        """Make `path` hold this experiment's state if one exists anywhere, and return it (None: start afresh).

        Rank 0 calls this before training; no file is ever deleted or overwritten by another experiment's.
        """
        for _ in range(3):  # the file at `path`, then at most one parked state moved into its place
            if not self.path.is_file():
                mine = self.parked(self.key)
                if not mine.is_file():
                    return None
                os.replace(mine, self.path)
                self.say(f"{self.path}: restored this experiment's parked state from {mine.name}")
            try:
                state = load_checkpoint(self.path)
            except CheckpointError as e:
                dest = self._aside("corrupt")
                os.replace(self.path, dest)
                self.say(f"{e}; moved it to {dest.name} and starting afresh")
                continue
            other = state.get("resume_key") if state.get("format") == CHECKPOINT_FORMAT else None
            if other == self.key:
                return state
            if isinstance(other, str) and KEY_RE.fullmatch(other):
                dest = self.parked(other)  # resumed when that experiment runs again
                why = "belongs to another experiment (params, data or code differ)"
            else:  # an older format or a foreign file: keep it, but nothing will resume from it
                dest = self._aside("old")
                why = "is not a state this version can resume"
            os.replace(self.path, dest)
            self.say(f"{self.path} {why}: parked it as {dest.name}")
        return None

    def load(self, map_location="cpu") -> dict | None:
        """This experiment's state at `path` (after `prepare`), on every rank; None if there is none."""
        if not self.path.is_file():
            return None
        state = load_checkpoint(self.path, map_location=map_location)
        return state if state.get("format") == CHECKPOINT_FORMAT and state.get("resume_key") == self.key else None

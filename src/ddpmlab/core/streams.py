"""Named randomness streams: each purpose draws from its own generator, seeded by (seed, stream, *parts).

An experiment has one `seed`. Every consumer of randomness names its purpose here and
derives its generator seed with `stream_seed(seed, Stream.X, *parts)`, so no two purposes ever share
numbers: sample 6's x_T is not the residual check's noise, and changing how many validation draws are
made never moves the samples. Tests check that every call site seeds through this module.
"""

from __future__ import annotations

import enum

import numpy as np


class Stream(enum.IntEnum):
    """One value per purpose; the comment says which `parts` index it further."""

    SPLIT = 1             # the train/validation split of the prepared images
    WEIGHT_INIT = 2       # the network's initial weights (identical on every rank)
    EPOCH_ORDER = 3       # parts: (epoch,) the order of the training images
    TRAIN_NOISE = 4       # parts: (step,) a step's t, noise and flips
    DROPOUT = 5           # parts: (step, rank)
    VALIDATION = 6        # the fixed (t, noise) draws of the validation loss
    SAMPLE_NOISE = 7      # parts: (image index,) x_T and every step's noise of one sample
    KID_SUBSETS = 8       # the KID subset draws
    RESIDUAL_T = 9        # the residual check's t grid
    RESIDUAL_NOISE = 10   # the residual check's noise
    KS_SUBSAMPLE = 11     # the offset of the Kolmogorov-Smirnov subsample
    RESIDUAL_FIGURE = 12  # which points the residual figures thin to
    FORWARD_STRIP = 13    # the noise of the forward-process figure
    SIMULATION = 14       # parts: (replicate,) a calibration study's simulated residuals
    EXPORT_PROBE = 15     # the inputs on which an exported network is checked against ours


def stream_seed(seed: int, stream: Stream, *parts: int, bits: int = 63) -> int:
    """A `bits`-bit seed for `stream`, from numpy's SeedSequence (its hash mixes every input word).

    The input words are (seed low 32 bits, seed high bits, stream, len(parts), *parts): the length
    word keeps (seed, s, 0) and (seed, s) apart, which SeedSequence alone would not (it pads with zeros).
    bits=32 for consumers that take 32-bit seeds (numpy RandomState, as torch-fidelity's KID uses).
    """
    words = [int(seed), int(stream), *map(int, parts)]
    if any(w < 0 for w in words):
        raise ValueError(f"seeds and stream parts are non-negative integers, got {words}")
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, got {bits}")
    entropy = [words[0] & 0xFFFFFFFF, words[0] >> 32, words[1], len(parts), *words[2:]]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(64 - bits))


def numpy_rng(seed: int, stream: Stream, *parts: int) -> np.random.Generator:
    """numpy's default generator on `stream` (see stream_seed)."""
    return np.random.default_rng(stream_seed(seed, stream, *parts))


def torch_generator(seed: int, stream: Stream, *parts: int, device="cpu"):
    """A torch.Generator on `device` seeded on `stream` (see stream_seed)."""
    import torch  # here, not above: the numpy-only residual check imports this module without torch

    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream, *parts))

"""Memorization: copies (also mirrored) are found; fresh images are not flagged."""

import numpy as np

from ddpmlab.core.memorization import analyse, feature_nn, pixel_nn


def images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_pixel_nn_finds_copies_and_mirrored_copies():
    train = images(10, 0)
    q = np.stack([train[3], train[7][:, ::-1]])
    d, idx = pixel_nn(q, train)
    assert (d == 0.0).all(), "an exact copy is at distance exactly 0, not a rounding residue"
    assert idx[0] == 3 and idx[1] == 10 + 7  # index >= len(train): the mirrored copy
    d_noflip, _ = pixel_nn(q, train, flips=False)
    assert d_noflip[0] == 0.0 and d_noflip[1] > 0.1


def test_pixel_nn_exact_at_realistic_sizes():
    """64x64 RGB images with large pixel norms: the float32 expansion gave copies ~1e-4, never 0."""
    rng = np.random.default_rng(7)
    train = rng.integers(200, 256, (300, 64, 64, 3), dtype=np.uint8)
    q = train[::37].copy()
    d, idx = pixel_nn(q, train, chunk=3)
    assert (d == 0.0).all() and (idx == np.arange(0, 300, 37)).all()


def test_pixel_nn_matches_brute_force():
    train, q = images(13, 1), images(5, 2)
    d, idx = pixel_nn(q, train, flips=False, chunk=2)
    # exact integer squared distances: the result must equal them bit for bit after the same scaling
    d2 = ((q[:, None].astype(np.int64) - train[None].astype(np.int64)) ** 2).sum(axis=(2, 3, 4))
    assert (idx == d2.argmin(1)).all()
    assert (d == np.sqrt(d2.min(1) / (8 * 8 * 3 * 255.0**2))).all()


def test_feature_nn_cosine():
    f = np.eye(4)
    s, j = feature_nn(np.array([[2.0, 0, 0, 0], [1.0, 1.0, 0, 0]]), f)
    assert np.allclose(s, [1.0, np.sqrt(0.5)]) and j[0] == 0


def test_copies_flagged_fresh_images_not():
    rng = np.random.default_rng(3)
    train, val = images(40, 4), images(10, 5)
    ft, fv = rng.normal(size=(40, 16)), rng.normal(size=(10, 16))
    copies, fresh = train[:8], images(8, 6)
    m, _ = analyse(copies, train, val, ft[:8] * 1.01, ft, fv, pixel_ratio=0.5, cosine_threshold=0.95)
    assert m.near_copy_fraction_pixel == 1.0 and m.near_copy_fraction_feature == 1.0 and m.sample_pixel_median < 1e-6
    m, _ = analyse(fresh, train, val, rng.normal(size=(8, 16)), ft, fv, pixel_ratio=0.5, cosine_threshold=0.95)
    assert m.near_copy_fraction_pixel == 0.0 and m.near_copy_fraction_feature == 0.0
    assert 0.7 < m.sample_pixel_median / m.val_pixel_median < 1.3

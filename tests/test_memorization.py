"""Memorization: copies (also mirrored) are found; fresh images are not flagged."""

import numpy as np

from ddpmlab.evaluation.memorization import analyse, feature_nn, pixel_nn


def images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_pixel_nn_finds_copies_and_mirrored_copies():
    train = images(10, 0)
    q = np.stack([train[3], train[7][:, ::-1]])
    d, idx = pixel_nn(q, train)
    assert np.allclose(d, 0, atol=1e-6)
    assert idx[0] == 3 and idx[1] == 10 + 7  # index >= len(train): the mirrored copy
    d_noflip, _ = pixel_nn(q, train, flips=False)
    assert d_noflip[0] < 1e-6 and d_noflip[1] > 0.1


def test_pixel_nn_matches_brute_force():
    train, q = images(13, 1), images(5, 2)
    d, idx = pixel_nn(q, train, flips=False, chunk=2)
    full = np.sqrt((((q[:, None].astype(float) - train[None].astype(float)) / 255) ** 2).mean(axis=(2, 3, 4)))
    assert np.allclose(d, full.min(1), atol=1e-5) and (idx == full.argmin(1)).all()


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

"""Precision and recall (Kynkäänniemi et al. 2019): torch-fidelity's computation against a brute-force
reference written from the paper's eq. 1-2, the limiting cases, k capping, and the metrics bundle."""

import numpy as np
import pytest

from ddpmlab.core.metrics import MetricSpec, evaluate_samples, feature_metrics, summary
from ddpmlab.core.precision_recall import effective_k, precision_recall


def brute_force(gen: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    """Eq. 2 literally: phi is in the manifold of Phi iff ||phi - phi'|| <= ||phi' - NN_k(phi')|| for some phi'."""

    def radii(X):  # distance of each point to its k-th nearest neighbour among the others
        return np.array([np.sort([np.linalg.norm(x - y) for j, y in enumerate(X) if j != i])[k - 1] for i, x in enumerate(X)])

    def inside(points, X):
        r = radii(X)
        return np.mean([any(np.linalg.norm(p - x) <= r[j] for j, x in enumerate(X)) for p in points])

    return float(inside(gen, real)), float(inside(real, gen))  # precision: samples in the real manifold; recall: vice versa


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(k, seed):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(40, 8))
    gen = rng.normal(loc=0.8, scale=0.9, size=(30, 8))  # overlapping but shifted: 0 < P, R < 1
    pr = precision_recall(gen, real, k)
    p, r = brute_force(gen, real, k)
    assert (pr.precision, pr.recall) == (p, r)  # both are counts / N: exact, ties have probability 0 here
    assert 0 < pr.precision < 1 and 0 < pr.recall < 1
    assert (pr.k, pr.n_generated, pr.n_reference) == (k, 30, 40)


def test_identical_sets_give_one():
    x = np.random.default_rng(3).normal(size=(25, 16))
    pr = precision_recall(x, x.copy(), 3)
    assert pr.precision == 1.0 and pr.recall == 1.0


def test_disjoint_far_sets_give_zero():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(20, 16))
    gen = rng.normal(size=(20, 16)) + 100.0
    pr = precision_recall(gen, real, 3)
    assert pr.precision == 0.0 and pr.recall == 0.0


def test_mode_collapse_keeps_precision_loses_recall():
    """All samples near one real image: inside the real manifold (precision 1), covering almost none of it."""
    rng = np.random.default_rng(5)
    real = rng.normal(size=(50, 8))
    gen = real[0] + 1e-3 * rng.normal(size=(30, 8))
    pr = precision_recall(gen, real, 3)
    assert pr.precision == 1.0 and pr.recall <= 3 / 50


def test_k_is_capped_at_n_minus_one():
    assert effective_k(3, 64, 136) == 3 and effective_k(3, 3, 136) == 2 and effective_k(10, 5, 4) == 3
    rng = np.random.default_rng(6)
    pr = precision_recall(rng.normal(size=(3, 4)), rng.normal(size=(10, 4)), 3)
    assert pr.k == 2
    with pytest.raises(ValueError, match="at least 2 images"):
        effective_k(3, 1, 10)
    with pytest.raises(ValueError, match="expected features"):
        precision_recall(np.zeros((4, 3)), np.zeros((4, 5)))


def test_feature_metrics_bundle_states_N_k_and_subset():
    rng = np.random.default_rng(7)
    real, gen = rng.normal(size=(40, 6)), rng.normal(size=(12, 6))
    m = feature_metrics(gen, real, MetricSpec(kid_subsets=10, kid_subset_size=50, prc_k=3, seed=0))
    assert m["kid_subset_size"] == 12 and m["prc_k"] == 3 and (m["n_generated"], m["n_reference"]) == (12, 40)
    assert m["fid"] > 0 and m["fid_small_sample_bias"] is True
    assert (m["precision"], m["recall"]) == brute_force(gen, real, 3)
    assert "precision" in summary(m) and "WARNING" in summary(m)


def test_evaluate_samples_uses_the_injected_extractor():
    """No Inception weights: a pixel-statistics extractor stands in for it."""
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)

    def extract(ims):
        return ims.reshape(len(ims), -1, 3).mean(1).astype(np.float64)

    ref = extract(rng.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8))
    feats, m = evaluate_samples(images, ref, extract, MetricSpec(5, 8, 3, 0))
    assert feats.shape == (10, 3) and np.array_equal(feats, extract(images))
    assert m == feature_metrics(feats, ref, MetricSpec(5, 8, 3, 0))


def test_float32_samples_against_float64_reference_as_peers_accept():
    """What a torch extractor returns (float32) against stored float64 features: once a bare AssertionError from
    torch-fidelity's dtype check; now the same metrics as with both upcast."""
    rng = np.random.default_rng(9)
    real, gen = rng.normal(size=(40, 6)), rng.normal(size=(30, 6)).astype(np.float32)
    spec = MetricSpec(kid_subsets=10, kid_subset_size=20, prc_k=3, seed=0)
    assert feature_metrics(gen, real, spec) == feature_metrics(gen.astype(np.float64), real, spec)
    r32 = real.astype(np.float32)
    assert feature_metrics(r32, gen, spec) == feature_metrics(r32.astype(np.float64), gen.astype(np.float64), spec)
    with pytest.raises(ValueError, match=r"one D for both, got \(30, 6\) and \(40, 5\)"):
        feature_metrics(gen, real[:, :5], spec)

"""All sample-quality metrics of one image set, from features: FID, KID ± std, precision and recall.

`feature_metrics` is a pure function of two feature arrays; `evaluate_samples` adds the feature
extraction (any callable uint8 [N, H, W, C] -> [N, D], normally `fid.InceptionFeatures`), so tests
can inject a cheap extractor and need no Inception weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ddpmlab.core.fid import fid_from_features, kid_from_features
from ddpmlab.core.precision_recall import precision_recall
from ddpmlab.core.streams import Stream, stream_seed

# FID's bias at small N is large (Chong & Forsyth 2020); below this many images prefer KID.
FID_RELIABLE_N = 2048

Extractor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MetricSpec:
    """How to compute the metrics: KID subsets and subset size (capped at the image counts), k of the
    precision/recall k-NN radii (capped at N-1), and the experiment seed (the KID subsets draw from its
    KID_SUBSETS stream)."""

    kid_subsets: int
    kid_subset_size: int
    prc_k: int
    seed: int

    @property
    def kid_seed(self) -> int:
        """The 32-bit seed of torch-fidelity's KID subset draws (numpy RandomState takes 32 bits)."""
        return stream_seed(self.seed, Stream.KID_SUBSETS, bits=32)


def feature_metrics(gen: np.ndarray, ref: np.ndarray, spec: MetricSpec) -> dict:
    """gen [N_g, D], ref [N_r, D] -> flat dict of metrics with the N, subset size and k actually used.
    Both are computed on in float64, whatever the dtype of each (torch extractors give float32; torch-fidelity
    asserts equal dtypes; clean-fid and pytorch-fid accept the mix): ValueError for shapes that cannot be compared."""
    gen, ref = np.asarray(gen), np.asarray(ref)
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != ref.shape[1]:
        raise ValueError(f"features must be [N, D] with one D for both, got {gen.shape} and {ref.shape}")
    if not (np.issubdtype(gen.dtype, np.floating) and np.issubdtype(ref.dtype, np.floating)):
        raise ValueError(f"features must be floating point, got {gen.dtype} and {ref.dtype}")
    gen, ref = gen.astype(np.float64, copy=False), ref.astype(np.float64, copy=False)
    subset = min(spec.kid_subset_size, len(gen), len(ref))
    kid, kid_std = kid_from_features(gen, ref, spec.kid_subsets, subset, spec.kid_seed)
    pr = precision_recall(gen, ref, spec.prc_k)
    return {
        "fid": fid_from_features(gen, ref),
        "kid": kid,
        "kid_std": kid_std,
        "kid_subset_size": subset,
        "kid_subsets": spec.kid_subsets,
        "precision": pr.precision,
        "recall": pr.recall,
        "prc_k": pr.k,
        "n_generated": len(gen),
        "n_reference": len(ref),
        "fid_small_sample_bias": min(len(gen), len(ref)) < FID_RELIABLE_N,
    }


def evaluate_samples(images: np.ndarray, ref: np.ndarray, extract: Extractor, spec: MetricSpec) -> tuple[np.ndarray, dict]:
    """uint8 images [N, H, W, C] and reference features [N_r, D] -> (their features [N, D], metrics)."""
    feats = extract(images)
    return feats, feature_metrics(feats, ref, spec)


def summary(m: dict) -> str:
    """One line of the metrics, plus a warning line when FID's small-sample bias dominates."""
    line = (f"FID {m['fid']:.2f}, KID {m['kid']:.4f} ± {m['kid_std']:.4f} (subset {m['kid_subset_size']}), "
            f"precision {m['precision']:.3f} / recall {m['recall']:.3f} (k = {m['prc_k']}), "
            f"{m['n_generated']} generated vs {m['n_reference']} reference images")
    if m["fid_small_sample_bias"]:
        line += (f"\nWARNING: fewer than {FID_RELIABLE_N} images: FID is strongly biased upward at this N; "
                 "compare KID, and compare FID only at equal N.")
    return line

"""Improved precision and recall (Kynkäänniemi et al. 2019) of generated against real features.

Each set's manifold is estimated as the union of balls around its points, the radius of a point
being the distance to its k-th nearest neighbour within its own set (eq. 2):

    f(phi, Phi) = 1  if  ||phi - phi'||_2 <= ||phi' - NN_k(phi')||_2  for some phi' in Phi, else 0
    precision   = 1/|Phi_g| sum_{phi_g in Phi_g} f(phi_g, Phi_r)   (eq. 1: samples inside the real manifold)
    recall      = 1/|Phi_r| sum_{phi_r in Phi_r} f(phi_r, Phi_g)   (samples cover the real manifold)

Low precision with fair recall reads as "blobs": samples off the data manifold. High precision with
low recall reads as mode collapse. Copies of training images give precision and recall near 1 at
a tiny FID: read them with the memorization stage.

The computation is torch-fidelity 0.4.0's (`metric_prc.prc_features_to_metric`, the same code as
`fidelity --prc`), fed with this project's offline Inception pool features instead of the paper's
VGG-16 fc2 features, so absolute values are not comparable with the paper's tables; compare runs
with the same N and k (the estimate depends on both: more points, tighter balls).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_K = 3  # the paper's choice (section 3: k = 3 gives the most faithful manifold for 50k images)


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    k: int  # the neighbourhood size actually used (capped at min(N_gen, N_real) - 1)
    n_generated: int
    n_reference: int

    def reading(self) -> str:
        return (f"precision {self.precision:.3f}, recall {self.recall:.3f} (k = {self.k}, {self.n_generated} generated vs "
                f"{self.n_reference} reference images, Inception pool features)")


def effective_k(k: int, n_generated: int, n_reference: int) -> int:
    """k capped so that every point of both sets has a k-th neighbour other than itself."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = min(n_generated, n_reference)
    if n < 2:
        raise ValueError(f"precision/recall need at least 2 images per set, got {n_generated} generated and {n_reference} reference")
    return min(k, n - 1)


def precision_recall(generated: np.ndarray, reference: np.ndarray, k: int = DEFAULT_K) -> PrecisionRecall:
    """generated [N_g, D], reference [N_r, D] features -> precision and recall with k-NN radii (k capped at N-1)."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    if generated.ndim != 2 or reference.ndim != 2 or generated.shape[1] != reference.shape[1]:
        raise ValueError(f"expected features [N_g, D] and [N_r, D], got {generated.shape} and {reference.shape}")
    used = effective_k(k, len(generated), len(reference))
    # float64: distance ties (duplicates, near-copies) must not flip with rounding
    g = torch.from_numpy(np.ascontiguousarray(generated, dtype=np.float64))
    r = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float64))
    out = prc_features_to_metric(g, r, prc_neighborhood=used, prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    # both are counts / N, which torch-fidelity averages in float32: recover the exact fractions
    n_g, n_r = len(generated), len(reference)
    return PrecisionRecall(round(out["precision"] * n_g) / n_g, round(out["recall"] * n_r) / n_r, used, n_g, n_r)

"""Are samples copies of training images? Nearest neighbours against a held-out baseline.

For each generated sample: its nearest training image by pixel L2 (RMS over pixels in [0, 1];
horizontally flipped training images count too, since training flips) and by Inception-feature
cosine similarity. The baseline is the same for each validation image: real images the model never
saw, at the typical distance of a new image from the training set. A sample is a near-copy when
it is much closer to a training image than that baseline: pixel distance below `pixel_ratio` x the
median validation distance, or cosine similarity above `cosine_threshold`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def pixel_nn(queries: np.ndarray, train: np.ndarray, flips: bool = True, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, H, W, 3] vs [M, H, W, 3] -> (RMS distance in [0, 1] units [N], index into train [N]).

    With flips, index i >= M means training image i - M mirrored.

    Squared distances are exact: ||q - b||^2 = ||q||^2 + ||b||^2 - 2 q.b is evaluated on the raw
    integer pixel values in float64, where every product (<= 255^2) and every partial sum
    (<= 255^2 D, below 2^53 for any D < 1.3e11) is an exactly representable integer. So the result
    does not depend on BLAS summation order or thread count, and an exact copy is at distance 0.0
    exactly (the same expansion in float32 on [0, 1] values left copies at ~3e-4).
    """
    if queries.dtype != np.uint8 or train.dtype != np.uint8:
        raise ValueError(f"pixel_nn expects uint8 images, got {queries.dtype} and {train.dtype}")
    bank = np.concatenate([train, train[:, :, ::-1]]) if flips else train  # [N, H, W, 3]: W is axis 2
    b = bank.reshape(len(bank), -1).astype(np.float64)  # [M', D] integers 0..255
    d = b.shape[1]
    b2 = np.einsum("ij,ij->i", b, b)  # [M'] exact integers
    dists, idx = [], []
    for i in range(0, len(queries), chunk):
        q = queries[i : i + chunk].reshape(-1, d).astype(np.float64)  # [n, D]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] + b2[None] - 2.0 * (q @ b.T)  # [n, M'] exact integers >= 0
        j = d2.argmin(1)  # ties (exact now) go to the lowest index: the unmirrored image first
        dists.append(np.sqrt(d2[np.arange(len(q)), j] / (d * 255.0**2)))
        idx.append(j)
    return np.concatenate(dists), np.concatenate(idx)


def feature_nn(queries: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inception features [N, F] vs [M, F] -> (max cosine similarity [N], index [N])."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(1e-12)
    t = train / np.linalg.norm(train, axis=1, keepdims=True).clip(1e-12)
    sim = q @ t.T
    j = sim.argmax(1)
    return sim[np.arange(len(q)), j], j


@dataclass
class Memorization:
    sample_pixel_median: float
    val_pixel_median: float
    pixel_threshold: float
    near_copy_fraction_pixel: float
    sample_cosine_median: float
    val_cosine_median: float
    cosine_threshold: float
    near_copy_fraction_feature: float
    n_samples: int
    n_val: int
    n_train: int

    def reading(self) -> str:
        ratio = self.sample_pixel_median / self.val_pixel_median if self.val_pixel_median else float("nan")
        return (f"samples sit {ratio:.2f}x as far from their nearest training image as held-out real images do (median RMS pixel "
                f"distance {self.sample_pixel_median:.3f} vs {self.val_pixel_median:.3f}); {100 * self.near_copy_fraction_pixel:.1f}% are "
                f"pixel near-copies (< {self.pixel_threshold:.3f}) and {100 * self.near_copy_fraction_feature:.1f}% feature near-copies "
                f"(cosine > {self.cosine_threshold:g})")

    def metrics(self) -> dict:
        return {f"mem_{k}": v for k, v in asdict(self).items()}


def analyse(samples, train, val, f_samples, f_train, f_val, pixel_ratio: float, cosine_threshold: float):
    """Returns (Memorization, details) where details holds the per-sample arrays for the figures."""
    s_pix, s_idx = pixel_nn(samples, train)
    v_pix, _ = pixel_nn(val, train)
    s_cos, s_fidx = feature_nn(f_samples, f_train)
    v_cos, _ = feature_nn(f_val, f_train)
    thr = pixel_ratio * float(np.median(v_pix))
    m = Memorization(
        sample_pixel_median=float(np.median(s_pix)),
        val_pixel_median=float(np.median(v_pix)),
        pixel_threshold=thr,
        near_copy_fraction_pixel=float(np.mean(s_pix < thr)),
        sample_cosine_median=float(np.median(s_cos)),
        val_cosine_median=float(np.median(v_cos)),
        cosine_threshold=cosine_threshold,
        near_copy_fraction_feature=float(np.mean(s_cos > cosine_threshold)),
        n_samples=len(samples),
        n_val=len(val),
        n_train=len(train),
    )
    return m, {"s_pix": s_pix, "s_idx": s_idx, "v_pix": v_pix, "s_cos": s_cos, "v_cos": v_cos}



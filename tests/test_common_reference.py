"""KID against a common reference (python -m ddpmlab.tools.common_reference): resizing, ordering, bad input.

The scoring tests use a cheap pixel extractor in place of Inception (the metrics code is Inception's own;
the Inception path is exercised by the pipeline's `evaluate`)."""

import subprocess
import sys

import numpy as np
import pytest

from ddpmlab.core.errors import DataError
from ddpmlab.tools.common_reference import compare, load_images, resize_images
from ddpmlab.core.metrics import MetricSpec

from .conftest import ROOT, blob_images

SPEC = MetricSpec(kid_subsets=50, kid_subset_size=16, prc_k=3, seed=0)


def pixel_features(images: np.ndarray) -> np.ndarray:
    """A stand-in for Inception: 8x8 block means of each channel, as float64 features. It insists on the
    reference's 24 px, so a sample set that reached it unresized fails the test."""
    assert images.shape[1:3] == (24, 24), images.shape
    x = resize_images(images, 8).astype(np.float64) / 255.0
    return x.reshape(len(x), -1)


@pytest.fixture(scope="module")
def reference():
    return np.stack([np.asarray(im.resize((24, 24))) for im in blob_images(48, 24, seed=1)])


def test_resize_keeps_dtype_and_channels_and_leaves_the_reference_size_alone(reference):
    up = resize_images(reference, 32)
    assert up.shape == (48, 32, 32, 3) and up.dtype == np.uint8
    assert resize_images(reference, 24) is reference
    grey = reference[..., :1]
    assert resize_images(grey, 16).shape == (48, 16, 16, 1)
    # smooth content survives a round trip through another size (what makes the comparison fair)
    flat = np.full((2, 24, 24, 3), 128, np.uint8)
    assert np.array_equal(resize_images(resize_images(flat, 32), 24), flat)


def test_copies_at_another_size_score_near_the_reference_and_far_from_noise(reference):
    rng = np.random.default_rng(2)
    sets = {
        "copies at 24 px": reference.copy(),
        "copies stored at 32 px": resize_images(reference, 32),
        "noise": rng.integers(0, 256, reference.shape, dtype=np.uint8),
    }
    res = compare(sets, reference, pixel_features, SPEC, draw=16)
    kid = {k: v["kid_draw_mean"] for k, v in res.items()}
    assert kid["copies at 24 px"] < 0.01 and kid["copies stored at 32 px"] < 0.01 < kid["noise"] / 10, kid
    r = res["copies stored at 32 px"]
    assert (r["size_from"], r["size"], r["draw"], len(r["kid_draws"])) == (32, 24, 16, 3)  # 48 images: three disjoint draws of 16
    assert r["kid_draw_sd"] is not None and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1


def test_fewer_images_than_a_draw_is_one_draw(reference):
    r = compare({"few": reference[:10]}, reference, pixel_features, SPEC, draw=64)["few"]
    assert r["draw"] == 10 and len(r["kid_draws"]) == 1 and r["kid_draw_sd"] is None


def test_channel_mismatch_is_refused(reference):
    with pytest.raises(DataError, match="channel"):
        compare({"grey": reference[..., :1]}, reference, pixel_features, SPEC)


@pytest.mark.parametrize(
    "write, match",
    [
        (lambda p: p.write_bytes(b"not a zip"), "not a readable .npz"),
        (lambda p: np.savez(p, images=np.array([{"a": 1}], dtype=object)), "pickle"),  # never loaded
        (lambda p: np.savez(p, pics=np.zeros((2, 8, 8, 3), np.uint8)), r"no array 'images' \(has \['pics'\]\)"),
        (lambda p: np.savez(p, images=np.zeros((2, 8, 8, 3), np.float32)), "uint8"),
        (lambda p: np.savez(p, images=np.zeros((2, 8, 6, 3), np.uint8)), "square"),
        (lambda p: np.savez(p, images=np.zeros((1, 8, 8, 3), np.uint8)), "at least 2"),
    ],
)
def test_bad_sample_files_are_one_line_errors(tmp_path, write, match):
    p = tmp_path / "s.npz"
    write(p)
    with pytest.raises(DataError, match=match) as e:
        load_images(p)
    assert "\n" not in str(e.value)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    r = subprocess.run([sys.executable, "-m", "ddpmlab.tools.common_reference", str(bad), "--reference", str(bad)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert r.stderr.startswith("common_reference:") and "bad.npz" in r.stderr
    h = subprocess.run([sys.executable, "-m", "ddpmlab.tools.common_reference", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert h.returncode == 0 and "--reference" in h.stdout and "common reference" in h.stdout

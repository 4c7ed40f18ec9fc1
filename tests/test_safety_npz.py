"""Untrusted .npz files (prepared splits, samples, features) give one DataError line: never a traceback, a pickle or
an allocation the file's header asks for but its bytes do not back."""

import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from ddpmlab.pipeline.data.splits import MAX_ARRAY_BYTES, load_array, load_split, read_array
from ddpmlab.core.errors import DataError

from .conftest import ROOT, committed_params_file


def npz_with_header(path, shape, descr="|u1", payload=b"", keys=("images", "features")):
    """An .npz whose members (one per key) declare `shape` but carry only `payload` after their header."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        for k in keys:
            z.writestr(f"{k}.npy", buf.getvalue() + payload)  # the header writer puts the magic string first
    return path


def corrupt_compressed(path, keys=("images", "features")):
    """A savez_compressed file (as the pipeline writes) with bytes in the middle of each member's deflate stream flipped."""
    x = np.random.default_rng(1).integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    np.savez_compressed(path, **{k: x for k in keys})
    with zipfile.ZipFile(path) as z:
        spans = [(i.header_offset, i.compress_size) for i in z.infolist()]
    raw = bytearray(path.read_bytes())
    for offset, size in spans:  # the middle of each member's deflate stream (past its local header)
        for i in range(offset + 100 + size // 2, offset + 100 + size // 2 + 64):
            raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def shadowed(path):
    """A small valid `images.npy` beside a member named exactly `images` (np.load prefers that one) holding 20 MB."""
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 4, 4, 3), np.uint8))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("images.npy", buf.getvalue())
        z.writestr("images", bytes(20 << 20))
        z.writestr("features.npy", buf.getvalue())
        z.writestr("features", bytes(20 << 20))
    return path


@pytest.fixture
def good(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "good.npz", images=x)
    return tmp_path / "good.npz", x


def bad_files(tmp_path, good_path, keys=("images", "features")):
    """One file of each bad kind; the members that should hold arrays are named `keys`."""
    raw = good_path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04" + bytes(60))
    (tmp_path / "text.npz").write_text("not an archive\n")
    obj = np.array([{"a": 1}, None], dtype=object)
    np.savez(tmp_path / "pickled.npz", **{k: obj for k in keys})
    np.savez(tmp_path / "otherkey.npz", pics=np.zeros((2, 3), np.float32))
    return {
        "trunc": tmp_path / "trunc.npz",
        "junk": tmp_path / "junk.npz",
        "text": tmp_path / "text.npz",
        "pickled": tmp_path / "pickled.npz",
        "otherkey": tmp_path / "otherkey.npz",
        "terabytes": npz_with_header(tmp_path / "tb.npz", (10**6, 10**4, 10**4, 3), keys=keys),
        "short": npz_with_header(tmp_path / "short.npz", (100, 8, 8, 3), payload=bytes(50), keys=keys),
        "over_limit": npz_with_header(tmp_path / "big.npz", (MAX_ARRAY_BYTES + 1,), keys=keys),
        # negative sizes whose product is small or negative but which numpy's int64 product wraps to 64 MiB
        "negative": npz_with_header(tmp_path / "neg.npz", (-(2**26), 2**38 - 1), keys=keys),
        "zero_width": npz_with_header(tmp_path / "v0.npz", (2**40, 2**20), descr="|V0", keys=keys),
        "corrupt_deflate": corrupt_compressed(tmp_path / "cd.npz", keys),
        "missing": tmp_path / "nope.npz",
    }


def test_good_file_round_trips(good, tmp_path):
    path, x = good
    assert np.array_equal(read_array(path, "images"), x)
    assert np.array_equal(load_split(path), x)
    assert np.array_equal(load_array(path, "images"), x)
    # what the pipeline writes: savez_compressed (features, samples), and a Fortran-ordered array
    np.savez_compressed(tmp_path / "c.npz", images=x, features=np.asfortranarray(x[..., 0].astype(np.float32)))
    assert np.array_equal(load_split(tmp_path / "c.npz"), x)
    assert np.array_equal(load_array(tmp_path / "c.npz", "features"), x[..., 0])


def test_shadow_member_is_not_read(tmp_path):
    """np.load(path)["images"] would return the 20 MB member `images` as bytes; the checked `images.npy` is what is read."""
    got = read_array(shadowed(tmp_path / "s.npz"), "images")
    assert got.shape == (2, 4, 4, 3) and got.dtype == np.uint8


BAD = ["trunc", "junk", "text", "pickled", "otherkey", "terabytes", "short", "over_limit", "negative", "zero_width", "corrupt_deflate", "missing"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_npz_is_one_line_data_error(tmp_path, good, kind):
    path = bad_files(tmp_path, good[0])[kind]
    for reader in (lambda p: read_array(p, "images"), load_split, lambda p: load_array(p, "images")):
        with pytest.raises(DataError) as e:
            reader(path)
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg, msg
    if kind in ("terabytes", "short", "over_limit", "negative", "zero_width"):
        assert "declares" in msg  # refused from the header, before numpy allocates
    if kind == "pickled":
        assert "pickle" in msg
    if kind == "otherkey":
        assert "'pics'" in msg  # says what the file does hold


@pytest.mark.parametrize("kind", ["trunc", "terabytes", "pickled", "corrupt_deflate"])
def test_evaluate_and_sweep_stages_refuse_bad_npz_in_one_line(tmp_path, good, kind):
    path = bad_files(tmp_path, good[0])[kind]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    runs = {
        "evaluate": [sys.executable, str(ROOT / "stages/evaluate.py"), "--params", str(committed_params_file()), "--samples", str(path),
                     "--reference", str(path), "--weights", str(tmp_path / "w.pt"), "--features", str(tmp_path / "f.npz"),
                     "--out", str(tmp_path / "m.json"), "--device", "cpu"],
        "sweep": [sys.executable, str(ROOT / "stages/sweep.py"), "--params", str(committed_params_file()), "--model", str(tmp_path / "m.pt"),
                  "--reference", str(path), "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "sweep"), "--device", "cpu"],
    }
    for name, cmd in runs.items():
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode != 0, (name, r.stdout)
        assert "Traceback" not in r.stderr, (name, r.stderr[-2000:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{name}:") and str(path) in lines[0], (name, r.stderr)
        expect = {"trunc": "not a readable", "terabytes": "declares", "pickled": "pickle", "corrupt_deflate": "not a readable"}[kind]
        assert expect in lines[0], (name, lines[0])  # refused for the reason the case is named after


@pytest.mark.parametrize("kind", ["trunc", "junk", "text", "pickled", "terabytes", "short", "over_limit", "negative", "corrupt_deflate", "missing"])
def test_residuals_check_cli_refuses_bad_npz_in_one_line(tmp_path, kind):
    """`python -m ddpmlab.tools.residuals check FILE` reads a user's file: the same checks as the stages' reader, exit 2, one line."""
    r = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "good.npz", r=r, t=np.repeat(np.arange(4), 2), T=np.array(10))
    path = bad_files(tmp_path, tmp_path / "good.npz", keys=("r", "t", "T"))[kind]
    p = subprocess.run([sys.executable, "-m", "ddpmlab.tools.residuals", "check", str(path)], capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("residuals check: ") and str(path) in lines[0], p.stderr
    expect = {"pickled": "pickle", "terabytes": "declares", "short": "declares", "over_limit": "declares", "negative": "declares"}
    assert expect.get(kind, "not a readable") in lines[0], lines[0]


@pytest.mark.parametrize("case", ["float_samples", "one_sample", "grey_alpha", "one_reference", "int_features", "nan_features"])
def test_evaluate_refuses_samples_or_features_of_the_wrong_form(tmp_path, case):
    """Well-formed .npz files holding the wrong thing: exit 2, one line naming the expected form or the minimum
    (a single image once reached precision/recall's ValueError as a traceback)."""
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    ref = rng.standard_normal((5, 2048))
    samples = {"float_samples": samples.astype(np.float32), "one_sample": samples[:1], "grey_alpha": samples[..., :2]}.get(case, samples)
    ref = {"one_reference": ref[:1], "int_features": ref.astype(np.int64), "nan_features": np.where(ref > 2, np.nan, ref)}.get(case, ref)
    np.savez(tmp_path / "s.npz", images=samples)
    np.savez(tmp_path / "r.npz", features=ref)
    cmd = [sys.executable, str(ROOT / "stages/evaluate.py"), "--params", str(committed_params_file()), "--samples", str(tmp_path / "s.npz"),
           "--reference", str(tmp_path / "r.npz"), "--weights", str(tmp_path / "w.pt"), "--features", str(tmp_path / "f.npz"),
           "--out", str(tmp_path / "m.json"), "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr[-2000:]
    expect = "NaN or infinite" if case == "nan_features" else ("N >= 2" if case in ("one_sample", "one_reference", "int_features") else "uint8 images")
    assert expect in r.stderr, r.stderr

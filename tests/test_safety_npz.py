"""Untrusted .npz files (prepared splits, samples, features) give one DataError line: never a traceback, a pickle or
an allocation the file's header asks for but its bytes do not back."""

import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from ddpmlab.data.splits import MAX_ARRAY_BYTES, load_array, load_split, read_array
from ddpmlab.errors import DataError

from .conftest import ROOT


def npz_with_header(path, shape, descr="|u1", payload=b""):
    """An .npz whose `images.npy` declares `shape` but carries only `payload` after its header."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images.npy", buf.getvalue() + payload)  # the header writer puts the magic string first
    return path


@pytest.fixture
def good(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "good.npz", images=x)
    return tmp_path / "good.npz", x


def bad_files(tmp_path, good_path):
    raw = good_path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04" + bytes(60))
    (tmp_path / "text.npz").write_text("not an archive\n")
    np.savez(tmp_path / "pickled.npz", images=np.array([{"a": 1}, None], dtype=object))
    np.savez(tmp_path / "otherkey.npz", features=np.zeros((2, 3), np.float32))
    return {
        "trunc": tmp_path / "trunc.npz",
        "junk": tmp_path / "junk.npz",
        "text": tmp_path / "text.npz",
        "pickled": tmp_path / "pickled.npz",
        "otherkey": tmp_path / "otherkey.npz",
        "terabytes": npz_with_header(tmp_path / "tb.npz", (10**6, 10**4, 10**4, 3)),
        "short": npz_with_header(tmp_path / "short.npz", (100, 8, 8, 3), payload=bytes(50)),
        "over_limit": npz_with_header(tmp_path / "big.npz", (MAX_ARRAY_BYTES + 1,)),
        "missing": tmp_path / "nope.npz",
    }


def test_good_file_round_trips(good):
    path, x = good
    assert np.array_equal(read_array(path, "images"), x)
    assert np.array_equal(load_split(path), x)
    assert np.array_equal(load_array(path, "images"), x)


@pytest.mark.parametrize("kind", ["trunc", "junk", "text", "pickled", "otherkey", "terabytes", "short", "over_limit", "missing"])
def test_bad_npz_is_one_line_data_error(tmp_path, good, kind):
    path = bad_files(tmp_path, good[0])[kind]
    for reader in (lambda p: read_array(p, "images"), load_split, lambda p: load_array(p, "images")):
        with pytest.raises(DataError) as e:
            reader(path)
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg, msg
    if kind in ("terabytes", "short", "over_limit"):
        assert "declares" in msg  # refused from the header, before numpy allocates
    if kind == "pickled":
        assert "pickle" in msg
    if kind == "otherkey":
        assert "'features'" in msg  # says what the file does hold


@pytest.mark.parametrize("kind", ["trunc", "terabytes", "pickled"])
def test_evaluate_and_sweep_stages_refuse_bad_npz_in_one_line(tmp_path, good, kind):
    path = bad_files(tmp_path, good[0])[kind]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    runs = {
        "evaluate": [sys.executable, str(ROOT / "stages/evaluate.py"), "--params", str(ROOT / "params.yaml"), "--samples", str(path),
                     "--reference", str(path), "--weights", str(tmp_path / "w.pt"), "--features", str(tmp_path / "f.npz"),
                     "--out", str(tmp_path / "m.json"), "--device", "cpu"],
        "sweep": [sys.executable, str(ROOT / "stages/sweep.py"), "--params", str(ROOT / "params.yaml"), "--model", str(tmp_path / "m.pt"),
                  "--reference", str(path), "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "sweep"), "--device", "cpu"],
    }
    for name, cmd in runs.items():
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode != 0, (name, r.stdout)
        assert "Traceback" not in r.stderr, (name, r.stderr[-2000:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{name}:") and str(path) in lines[0], (name, r.stderr)

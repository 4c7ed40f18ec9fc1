"""Images: decompression bombs, extreme aspect ratios, lying headers, EXIF orientation, bounded memory.

Every hostile file is made here, cheaply (a 1-bit PNG of 13,370^2 pixels is a few kB), and the
prepare stage's peak resident memory on them is measured in a subprocess.
"""

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ddpmlab.pipeline.data.prepare import ImageRejected, load_image, prepare_folder

from .conftest import ROOT, blob_images, committed_params


def thin_png(path: Path, w=30000, h=1) -> Path:
    Image.new("RGB", (w, h), (200, 10, 10)).save(path)  # 167 bytes for 30000x1
    return path


def big_bilevel_png(path: Path, side=13_370) -> Path:
    """178.8 MP, just under Pillow's 2x bomb limit (so Pillow itself only warns), ~22 MB to make, kB on disk."""
    Image.new("1", (side, side), 1).save(path, optimize=True)
    return path


def lying_jpeg(path: Path, w: int, h: int) -> Path:
    """A valid 16x16 JPEG whose frame header (SOF0) claims w x h pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 128, 255)).save(buf, "JPEG")
    raw = bytearray(buf.getvalue())
    i = raw.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
    raw[i + 5 : i + 9] = struct.pack(">HH", h, w)
    path.write_bytes(bytes(raw))
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored 40x20, left half red, right half blue, with EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def test_extreme_aspect_ratio_is_refused_from_the_header(tmp_path):
    p = thin_png(tmp_path / "thin.png")
    assert p.stat().st_size < 400
    with pytest.raises(ImageRejected, match=r"30000x1 pixels: aspect ratio 3e\+04 exceeds prepare.max_aspect_ratio = 10"):
        load_image(p, 32, "pad")


def test_long_image_is_padded_without_a_full_size_canvas(tmp_path):
    """8:1 is allowed; with a small pixel budget the image is resized before padding, never squared at full size."""
    p = thin_png(tmp_path / "long.png", 4000, 500)
    x, raw = load_image(p, 32, "pad", max_megapixels=2.0)  # 4000^2 = 16 MP canvas would exceed 2 MP
    assert raw == (4000, 500) and x.shape == (32, 32, 3)
    assert (x[0] == 255).all() and (x[-1] == 255).all(), "white padding above and below"
    assert (x[16] == (200, 10, 10)).all(), "the image itself, a 32x4 band in the middle"
    y, _ = load_image(p, 32, "pad", max_megapixels=40.0)  # room for the 16 MP canvas
    diff = np.abs(x.astype(int) - y.astype(int))
    assert diff.max() <= 60 and diff[15:17].max() <= 2, "the same picture, up to antialiasing at the band's border"


def test_bomb_png_is_refused_before_decoding(tmp_path):
    p = big_bilevel_png(tmp_path / "bomb.png")
    assert p.stat().st_size < 100_000
    with pytest.raises(ImageRejected, match=r"decompression-bomb check: Image size \(178756900 pixels\)"):
        load_image(p, 32, "pad")  # Pillow's own header check, made an error (it only warns up to 179 MP)
    Image.new("1", (9000, 9000), 1).save(tmp_path / "b2.png")  # 81 MP: under Pillow's limit, over ours
    with pytest.raises(ImageRejected, match=r"9000x9000 pixels = 81.0 MP exceeds prepare.max_megapixels = 40"):
        load_image(tmp_path / "b2.png", 32, "pad")


@pytest.mark.parametrize("w, h", [(65000, 65000), (60000, 30000)])
def test_jpeg_header_claiming_a_huge_size(tmp_path, w, h):
    p = lying_jpeg(tmp_path / "lie.jpg", w, h)
    assert p.stat().st_size < 1000
    with pytest.raises(ImageRejected, match=f"\\({w * h} pixels\\)"):  # refused from the header, before any allocation
        load_image(p, 32, "pad")


def test_big_jpeg_is_decoded_at_reduced_size(tmp_path):
    """Above the pixel budget a JPEG is decoded with DCT downscaling (draft), not refused, not at full size."""
    rng = np.random.default_rng(0)
    a = np.repeat(np.repeat(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), 100, 0), 100, 1)  # 4000x3000 = 12 MP
    Image.fromarray(a).save(tmp_path / "big.jpg", quality=90)
    x, raw = load_image(tmp_path / "big.jpg", 32, "crop", max_megapixels=1.0)
    full, _ = load_image(tmp_path / "big.jpg", 32, "crop", max_megapixels=40.0)
    assert raw == (4000, 3000) and x.shape == (32, 32, 3)
    assert np.abs(x.astype(int) - full.astype(int)).mean() < 4  # the same picture


def test_decompression_bomb_warning_is_an_error(tmp_path, monkeypatch):
    """Between Pillow's limit and twice it, Pillow only warns; here that refuses the file."""
    Image.new("RGB", (40, 40), "red").save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 px: above the limit, below twice it
    with pytest.raises(ImageRejected, match=r"decompression-bomb check: Image size \(1600 pixels\)"):
        load_image(tmp_path / "a.png", 16, "pad")


def test_exif_orientation_is_applied(tmp_path):
    x, raw = load_image(exif_rotated_jpeg(tmp_path / "rot.jpg"), 16, "pad")
    assert raw == (40, 20)
    top, bottom = x[2, 8].astype(int), x[13, 8].astype(int)
    assert top[0] > 200 and top[2] < 60, f"displayed upright, the red half is on top: {top}"
    assert bottom[2] > 200 and bottom[0] < 60, f"and the blue half below: {bottom}"
    assert (x[8, 0] > 240).all() and (x[8, 15] > 240).all(), "white padding left and right (portrait), not above and below"


def hostile_folder(folder: Path) -> dict:
    folder.mkdir(parents=True)
    for i, im in enumerate(blob_images(4)):
        im.save(folder / f"ok_{i}.png")
    thin_png(folder / "thin.png")
    big_bilevel_png(folder / "bomb.png")
    lying_jpeg(folder / "lie.jpg", 65000, 65000)
    lying_jpeg(folder / "lie_400mp.jpg", 20000, 20000)  # 400 MP: Pillow's own check refuses it at the header
    (folder / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    thin_png(folder / "wide.png", 12000, 1500)  # allowed (8:1, 18 MP): padded without its 144 MP square canvas
    exif_rotated_jpeg(folder / "rot.jpg")
    return {"thin.png": "aspect ratio", "bomb.png": "178756900 pixels", "lie.jpg": "4225000000 pixels", "lie_400mp.jpg": "400000000 pixels", "garbage.png": ""}


def test_hostile_files_are_skipped_and_counted(tmp_path):
    expected = hostile_folder(tmp_path / "imgs")
    prep = prepare_folder(tmp_path / "imgs", 16, "pad", 0.25, seed=0)
    assert prep.stats["used"] == 6 and prep.stats["skipped"] == 5
    assert set(prep.stats["skipped_files"]) == set(expected)
    for name, why in expected.items():
        assert why in prep.stats["skipped_files"][name]


def peak_rss_mb(images: Path) -> int:
    """Peak resident memory (MB) of a fresh process that imports prepare and runs prepare_folder on `images`."""
    # VmHWM: this process image's own high-water mark (ru_maxrss would include the forking pytest parent's)
    code = ("from pathlib import Path\n"
            "from ddpmlab.pipeline.data.prepare import prepare_folder\n"
            f"prepare_folder(Path({str(images)!r}), 16, 'pad', 0.25, 0)\n"
            "print([int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.split()[-1])


def test_prepare_peak_memory_is_bounded_on_hostile_files(tmp_path):
    """Without the bounds, the 30000x1 PNG asked for a 2.7 GB canvas, the 13,370^2 PNG decoded to 540 MB and more,
    the 12000x1500 PNG was padded on a 144 MP (432 MB) square.

    Measured (2026-11-25): 107 MB peak RSS (VmHWM) on the hostile folder vs 44 MB on its good files
    alone; the difference is the one allowed 18 MP image (54 MB decoded).
    """
    hostile_folder(tmp_path / "raw")
    good = tmp_path / "good"
    good.mkdir()
    for p in sorted((tmp_path / "raw").glob("ok_*.png")) + [tmp_path / "raw" / "rot.jpg"]:
        (good / p.name).write_bytes(p.read_bytes())
    rss_good, rss = peak_rss_mb(good), peak_rss_mb(tmp_path / "raw")
    print(f"prepare_folder peak RSS: {rss} MB on hostile files, {rss_good} MB on the good ones alone")
    assert 0 < rss_good <= rss < rss_good + 120, f"peak RSS {rss} MB with hostile files vs {rss_good} MB without"


def test_prepare_stage_on_hostile_files(tmp_path):
    """The stage as DVC runs it: exit 0, no traceback, every refused file in skipped.json with its reason."""
    expected = hostile_folder(tmp_path / "raw" / "images")
    params = tmp_path / "params.yaml"
    p = committed_params()
    p["prepare"]["image_size"] = 16
    p["model"]["ch_mult"] = [1, 2]
    p["model"]["attn_resolutions"] = [8]
    params.write_text(yaml.safe_dump(p))
    r = subprocess.run([sys.executable, "stages/prepare.py", "--params", str(params), "--raw", str(tmp_path / "raw"),
                        "--out", str(tmp_path / "prepared"), "--reports", str(tmp_path / "reports")],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    skipped = json.loads((tmp_path / "reports" / "skipped.json").read_text())
    assert set(skipped) == set(expected), skipped
    for name, why in expected.items():
        assert why in skipped[name]
    stats = json.loads((tmp_path / "reports" / "stats.json").read_text())
    assert stats["skipped"] == 5 and stats["used"] == 6


def test_prepare_stage_without_images_is_one_line(tmp_path):
    (tmp_path / "raw" / "images").mkdir(parents=True)
    r = subprocess.run([sys.executable, "stages/prepare.py", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "p"), "--reports", str(tmp_path / "r")],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"prepare: {tmp_path / 'raw' / 'images'} holds no files: run the download stage first"]

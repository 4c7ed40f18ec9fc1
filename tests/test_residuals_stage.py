"""The residuals stage end to end on a tiny trained model: outputs, metrics the report rebuilds, the CLI on its export."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from ddpmlab.pipeline.io import read_json
from ddpmlab.core.schedule import ScheduleConfig
from ddpmlab.core.unet import UNetConfig
from ddpmlab.pipeline.stages.report import residuals_section
from ddpmlab.core.residuals import check as R
from ddpmlab.pipeline.configs import train_config
from ddpmlab.pipeline.schema import TrainParams
from ddpmlab.core.train_config import TrainSetup

from .conftest import ROOT, blob_images, committed_params, train_one_thread


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 20-image, 16x16, T = 20 model trained for 6 epochs; params.yaml made consistent with it."""
    d = tmp_path_factory.mktemp("res")
    x = np.stack([np.asarray(im.convert("RGB").resize((16, 16))) for im in blob_images(24, seed=2)]).astype(np.uint8)
    np.savez(d / "val.npz", images=x[20:])
    tc = dict(device="cpu", epochs=6, batch_size=8, lr=2e-3, weight_decay=0.0, warmup_steps=2, grad_clip=1.0, ema_decay=0.9, prediction="eps", min_snr_gamma=0.0,
              hflip=True, val_every=2, val_draws=2, checkpoint_every=3, bf16=True, compile=False, processes=1)
    setup = TrainSetup(UNetConfig(16, 3, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), norm_groups=8),
                       ScheduleConfig("linear", 20, 1e-4, 0.02), train_config(TrainParams(**tc)), 0)
    train_one_thread(setup, x[:20], x[20:], d)
    p = committed_params()
    p["T"] = 20
    p["schedule"]["name"] = "linear"  # as the model above was trained
    p["prepare"]["image_size"] = 16
    p["model"].update(ch_mult=[1, 2], attn_resolutions=[8])
    p["sample"]["steps"] = 10
    p["sweep"]["steps"] = [5, 10]
    p["residuals"].update(n_t=5, draws_per_t=2)
    (d / "params.yaml").write_text(yaml.safe_dump(p))
    return d


def stage(d, *extra):
    return subprocess.run([sys.executable, str(ROOT / "stages/residuals.py"), "--params", str(d / "params.yaml"), "--model", str(d / "model.pt"),
                           "--val", str(d / "val.npz"), "--out", str(d / "out"), "--device", "cpu", *extra],
                          capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})


def test_stage_writes_every_output_and_the_report_rebuilds_it(run_dir):
    p = stage(run_dir)
    assert p.returncode == 0, p.stderr
    out = run_dir / "out"
    for f in ("metrics.json", "loss_by_t.csv", "residuals.npz", "loss_by_t.png", "qq.png", "autocorr.png", "spikes.png"):
        assert (out / f).is_file(), f
    m = read_json(out / "metrics.json")
    chi = R.from_metrics(R.CheckResult, m, "chi2_")
    spikes = R.from_metrics(R.SpikeResult, m, "spike_")
    assert chi.n_rows == 4 * 2 * chi.n_t and chi.rows_per_t_min == 8 and chi.D == 3 * 16 * 16 and chi.alpha == 0.01
    assert p.stdout.splitlines()[0] == "residuals: " + chi.reading()
    md = residuals_section(chi, spikes, pd.read_csv(out / "loss_by_t.csv"), lambda k, alt: f"![{alt}]({k})")
    for s in (chi.marginal_reading(), chi.correlation_reading(), chi.scale_reading(), spikes.reading(), "(autocorr)", "(qq)", "(loss_by_t_plot)"):
        assert s in md, s
    # the export is the CLI's input: same verdict from the command line
    cli = subprocess.run([sys.executable, "-m", "ddpmlab.tools.residuals", "check", str(out / "residuals.npz")], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert cli.returncode == (0 if chi.verdict else 1) and cli.stdout.strip() == chi.reading()


def test_stage_refuses_one_row_per_t_in_one_line(run_dir, tmp_path):
    p = yaml.safe_load((run_dir / "params.yaml").read_text())
    np.savez(tmp_path / "one.npz", images=np.load(run_dir / "val.npz")["images"][:1])
    p["residuals"]["draws_per_t"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    r = subprocess.run([sys.executable, str(ROOT / "stages/residuals.py"), "--params", str(tmp_path / "params.yaml"), "--model", str(run_dir / "model.pt"),
                        "--val", str(tmp_path / "one.npz"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0 and r.stderr.strip().startswith("residuals: 1 validation image(s)") and "Traceback" not in r.stderr

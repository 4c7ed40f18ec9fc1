"""The benchmark runs end to end on the CPU and reports every row it promises (speed targets live in the benchmark, not here)."""

import pytest
import yaml

from ddpmlab.tools import bench
from ddpmlab.pipeline.schema import load_params
from ddpmlab.pipeline.configs import train_setup

from .conftest import committed_params, committed_params_file

pytestmark = pytest.mark.slow


def test_bench_runs_on_cpu_and_reports_all_rows(capsys):
    out = bench.main(["--preset", "default", "--params", str(committed_params_file()), "--device", "cpu", "--batch", "2",
                      "--forward-batch", "2", "--steps", "1", "--warmup", "0"])
    names = [r["name"] for r in out["rows"]]
    assert names[0].startswith("(a)") and names[1].startswith("(b)")
    assert any(n.startswith("(c) diffusers") for n in names), "diffusers is pinned for tests: its row must be measured"
    assert all(r["img_per_s"] > 0 and r["tflops"] > 0 for r in out["rows"])
    text = capsys.readouterr().out
    assert "FLOPs per image" in text and "ratio (a) / (b)" in text and "ratio (a) / (c)" in text


def test_default_preset_is_the_network_params_yaml_trains(tmp_path):
    """Read from params.yaml, never a copy: it follows an edit of the file."""
    P = load_params(committed_params_file())
    assert bench.preset("default", committed_params_file()) == train_setup(P, in_channels=3).model
    p = committed_params()
    p["model"].update(ch=16, num_res_blocks=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    cfg = bench.preset("default", tmp_path / "params.yaml")
    assert (cfg.ch, cfg.num_res_blocks, cfg.image_size) == (16, 3, P.prepare.image_size)


def test_flop_count_of_the_cifar10_preset():
    """37.5 GFLOP per image for a training step of the DDPM CIFAR-10 U-Net (Ho et al.'s network, by torch's FlopCounterMode), within 10%."""
    import torch

    cfg = bench.PRESETS["cifar10"]
    flops = bench.flops_per_image(bench.UNet(cfg), cfg, torch.device("cpu"), train=True)
    assert flops == pytest.approx(37.5e9, rel=0.1)

"""The `ddpmlab` console command: every subcommand run through the installed script, `ddpmlab sample`'s promise
(image i depends only on (seed, i), as in the pipeline; resumable folders), and the diffusers export round trip."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab.core.checkpoint import (
    build_sampler_from_checkpoint,
    load_checkpoint,
    save_atomic,
)
from ddpmlab.core.device import FastDenoiser
from ddpmlab.core.generate import generate
from ddpmlab.core.images import to_uint8
from ddpmlab.core.sampling import SamplerSpec, sample
from ddpmlab.core.schedule import ScheduleConfig
from ddpmlab.core.streams import Stream, torch_generator
from ddpmlab.core.train_config import TrainSetup
from ddpmlab.core.unet import UNet, UNetConfig
from ddpmlab.pipeline.configs import train_config
from ddpmlab.pipeline.schema import TrainParams
from ddpmlab.tools.cli import COMMANDS

from .conftest import ROOT, blob_images, committed_params_file, train_one_thread

SCRIPT = Path(sys.executable).parent / "ddpmlab"
T = 20


def ddpmlab(*args, cwd=ROOT, env_extra=None):
    """The console script as a user runs it (installed by `pip install -e .`, which scripts/env.sh does)."""
    assert SCRIPT.is_file(), f"{SCRIPT} missing: install the package (pip install -e .) so that its console script exists"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def one_line_error(p, rc=2):
    assert p.returncode == rc, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("usage:") and not ln.startswith(" ")]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 16x16 RGB model (T = 20) trained 4 epochs keeping an autoguidance EMA, and a copy of it whose EMA weights
    are all random (every weight far from its zero initialisation, so the export's network check means something)."""
    d = tmp_path_factory.mktemp("cli")
    x = np.stack([np.asarray(im.convert("RGB").resize((16, 16))) for im in blob_images(20, seed=3)]).astype(np.uint8)
    tc = dict(device="cpu", epochs=4, batch_size=8, lr=2e-3, weight_decay=0.0, warmup_steps=2, grad_clip=1.0, ema_decay=0.9, prediction="eps",
              min_snr_gamma=0.0, guide_fraction=0.5, hflip=True, val_every=2, val_draws=1, checkpoint_every=4, bf16=True, compile=False, processes=1)
    setup = TrainSetup(UNetConfig(16, 3, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), norm_groups=8),
                       ScheduleConfig("linear", T, 1e-4, 0.02), train_config(TrainParams(**tc)), 0)
    train_one_thread(setup, x[:16], x[16:], d)
    ckpt = load_checkpoint(d / "model.pt")
    ckpt["train_config"]["prediction"] = "v"  # the same weights read as a v-predictor: the export must say v_prediction
    save_atomic(ckpt, d / "v.pt")
    ckpt = load_checkpoint(d / "model.pt")
    g = torch.Generator().manual_seed(5)
    ckpt["ema"] = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in ckpt["ema"].items()}
    del ckpt["ema_guide"]
    save_atomic(ckpt, d / "random.pt")
    return d


def test_every_command_answers_help_with_a_usage_runnable_as_printed():
    top = ddpmlab("--help")
    assert top.returncode == 0 and all(name in top.stdout for name in COMMANDS)
    assert subprocess.run([sys.executable, "-m", "ddpmlab", "--help"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout == top.stdout
    for name in COMMANDS:
        p = ddpmlab(name, "--help")
        assert p.returncode == 0, (name, p.stderr)
        assert p.stdout.startswith(f"usage: ddpmlab {name} "), (name, p.stdout[:200])
        assert f"    ddpmlab {name} " in p.stdout, f"{name} --help shows no example"
    assert "unknown command 'smaple'" in one_line_error(ddpmlab("smaple"))
    assert ddpmlab().returncode == 2


def test_sample_image_i_depends_only_on_seed_and_index_as_in_the_pipeline(models, tmp_path):
    common = ("--model", models / "model.pt", "--steps", 5, "--device", "cpu", "--guidance", 2, "--seed", 7)
    a = ddpmlab("sample", *common, "--n", 5, "--batch-size", 2, "--npz", tmp_path / "a.npz", "--out-dir", tmp_path / "a")
    assert a.returncode == 0, a.stderr
    b = ddpmlab("sample", *common, "--n", 3, "--batch-size", 3, "--npz", tmp_path / "b.npz")
    assert b.returncode == 0, b.stderr
    ia, ib = np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "b.npz")["images"]
    assert ia.shape == (5, 16, 16, 3) and ia.dtype == np.uint8
    np.testing.assert_array_equal(ia[:3], ib)
    assert len({im.tobytes() for im in ia}) == 5
    pngs = sorted((tmp_path / "a").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(5)]
    np.testing.assert_array_equal(np.stack([np.asarray(Image.open(p)) for p in pngs]), ia)
    # the sample stage's own generator with the same settings (core.generate, autoguided as sample.guidance: 2)
    net, sched, _ = build_sampler_from_checkpoint(load_checkpoint(models / "model.pt"), "cpu", 2.0)
    g = generate(FastDenoiser(net, torch.device("cpu")), sched, SamplerSpec("ddim", 5), 5, 4, 7, (3, 16, 16), torch.device("cpu"))
    np.testing.assert_array_equal(g.images, ia)


def test_sample_folder_resumes_and_refuses_other_settings(models, tmp_path):
    out = tmp_path / "s"
    base = ("sample", "--model", models / "model.pt", "--steps", 4, "--device", "cpu", "--out-dir", out)
    assert ddpmlab(*base, "--n", 4).returncode == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    (out / "000002.png").unlink()
    again = ddpmlab(*base, "--n", 6, "--npz", tmp_path / "all.npz")
    assert again.returncode == 0, again.stderr
    assert "3 of 6 images already" in again.stdout
    assert all((out / n).read_bytes() == b for n, b in before.items())  # the redrawn 000002.png is the same image
    images = np.load(tmp_path / "all.npz")["images"]
    np.testing.assert_array_equal(images[2], np.asarray(Image.open(out / "000002.png")))
    assert len(list(out.glob("*.png"))) == 6
    line = one_line_error(ddpmlab(*base[:-4], "--steps", 3, "--device", "cpu", "--out-dir", out, "--n", 6))
    assert "other settings" in line and "steps 4 there, 3 now" in line and str(out) in line
    assert len(list(out.glob("*.png"))) == 6
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    assert "not empty" in one_line_error(ddpmlab(*base[:-1], foreign, "--n", 2))
    assert sorted(p.name for p in foreign.iterdir()) == ["holiday.jpg"]


def test_sample_bad_inputs_are_one_line(models, tmp_path):
    m = ("--model", models / "model.pt", "--device", "cpu", "--npz", tmp_path / "x.npz")
    assert "not found" in one_line_error(ddpmlab("sample", "--model", tmp_path / "none.pt", "--npz", tmp_path / "x.npz"))
    assert f"T = {T}" in one_line_error(ddpmlab("sample", *m, "--steps", 50))
    assert "ema_guide" in one_line_error(ddpmlab("sample", "--model", models / "random.pt", "--npz", tmp_path / "x.npz", "--guidance", 2))
    for bad in (("--n", 0), ("--n", 50_001), ("--eta", 2), ("--batch-size", 0), ("--guidance", -1)):
        assert bad[0] in one_line_error(ddpmlab("sample", *m, *bad)), bad
    assert "--out-dir" in one_line_error(ddpmlab("sample", "--model", models / "model.pt"))
    (tmp_path / "f").write_text("a file")
    assert "not a folder" in one_line_error(ddpmlab("sample", "--model", models / "model.pt", "--out-dir", tmp_path / "f"))
    assert not (tmp_path / "x.npz").exists()


def test_export_to_diffusers_loads_offline_and_computes_what_ours_does(models, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    out = tmp_path / "exported"
    p = ddpmlab("export", "diffusers", out, "--model", models / "random.pt")
    assert p.returncode == 0, p.stderr
    pipe = diffusers.DDPMPipeline.from_pretrained(out)  # offline: HF_HUB_OFFLINE is not needed for a local folder
    ckpt = load_checkpoint(models / "random.pt")
    ours = UNet(UNetConfig.from_dict(ckpt["model_config"]))
    ours.load_state_dict(ckpt["ema"])
    ours.eval()
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(6, 3, 16, 16, generator=g), torch.tensor([0, 3, 7, 11, 15, 19])
    with torch.no_grad():
        want, got = ours(x, t), pipe.unet(x, t).sample
    assert want.abs().mean() > 0.1  # random weights: a real output, not zeros
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert pipe.scheduler.config.num_train_timesteps == T and pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.scheduler.config.clip_sample is True
    np.testing.assert_allclose(pipe.scheduler.betas.numpy(), ScheduleConfig.from_dict(ckpt["schedule_config"]).build().betas, rtol=1e-6)


@pytest.mark.parametrize("sampler, model", [("ddim", "model.pt"), ("ddpm", "model.pt"), ("ddim", "v.pt")])
def test_exported_pipelines_draw_our_images_from_the_same_noise(models, tmp_path, sampler, model):
    """DDIMPipeline / DDPMPipeline, given image 0's noise generator, make `ddpmlab sample`'s image 0 (the trained model,
    and the same weights as a v-predictor)."""
    diffusers = pytest.importorskip("diffusers")
    out = tmp_path / "exported"
    assert ddpmlab("export", "diffusers", out, "--model", models / model, "--spacing", "leading").returncode == 0
    ckpt = load_checkpoint(models / model)
    net, sched, _ = build_sampler_from_checkpoint(ckpt, "cpu", 1.0)
    steps = 5 if sampler == "ddim" else T  # DDIM: T // steps = 4, so diffusers' t - T // steps is our next step
    x0, _ = sample(net, sched, SamplerSpec(sampler, steps, spacing="leading"), [0], 3, (3, 16, 16), "cpu")
    ours = (x0[0].permute(1, 2, 0).numpy() + 1) / 2
    gen = torch_generator(3, Stream.SAMPLE_NOISE, 0)
    if sampler == "ddim":
        pipe = diffusers.DDIMPipeline.from_pretrained(out)
        assert pipe.scheduler.config.prediction_type == ("v_prediction" if model == "v.pt" else "epsilon")
        theirs = pipe(batch_size=1, generator=gen, eta=0.0, num_inference_steps=steps, use_clipped_model_output=True, output_type="np").images[0]
    else:
        pipe = diffusers.DDPMPipeline.from_pretrained(out)
        theirs = pipe(batch_size=1, generator=gen, num_inference_steps=steps, output_type="np").images[0]
    assert ours.std() > 0.05
    np.testing.assert_allclose(theirs, ours, atol=1e-4)  # measured: 1e-7 (DDIM), 3e-6 (DDPM); diffusers keeps float32 tables
    assert (to_uint8(x0)[0] == np.round(theirs * 255)).mean() > 0.99


def test_export_refuses_what_it_cannot_map_and_never_clobbers(models, tmp_path):
    assert "autoguidance" in one_line_error(ddpmlab("export", "diffusers", tmp_path / "e", "--model", models / "model.pt", "--guidance", 2))
    assert not (tmp_path / "e").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert "not an earlier export" in one_line_error(ddpmlab("export", "diffusers", mine, "--model", models / "model.pt"))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert "not found" in one_line_error(ddpmlab("export", "diffusers", tmp_path / "e", "--model", tmp_path / "none.pt"))
    # an earlier export is replaced whole, with no temporary left beside it
    e = tmp_path / "e"
    assert ddpmlab("export", "diffusers", e, "--model", models / "model.pt").returncode == 0
    assert ddpmlab("export", "diffusers", e, "--model", models / "random.pt").returncode == 0
    assert '"source": "' + str(models / "random.pt") in (e / "ddpmlab_export.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "mine"]


def test_the_other_commands_through_the_console_script(tmp_path):
    params = committed_params_file()
    # residuals check: gaussian residuals with the variance the conjecture says -> consistent (0); a broken file -> 2
    rng = np.random.default_rng(0)
    t = np.repeat(np.arange(0, 100, 10), 8)
    np.savez(tmp_path / "r.npz", r=rng.standard_normal((len(t), 3, 8, 8)).astype(np.float32), t=t, T=np.int64(100))
    p = ddpmlab("residuals", "check", tmp_path / "r.npz")
    assert p.returncode in (0, 1) and "consistent" in p.stdout, p.stderr
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    assert "bad.npz" in one_line_error(ddpmlab("residuals", "check", tmp_path / "bad.npz"))
    # gate: a baseline that is not JSON -> 2, never a regression (1)
    (tmp_path / "base.json").write_text("{not json")
    assert "base.json" in one_line_error(ddpmlab("gate", "x", "--params", params, "--baseline", tmp_path / "base.json"))
    # compare outside a DVC project -> one line
    one_line_error(ddpmlab("compare", "a", "b", cwd=tmp_path))
    # preset: the dvc command it would run
    p = ddpmlab("preset", ROOT / "presets" / "smoke.yaml", "--params", params, "--print")
    assert p.returncode == 0 and p.stdout.startswith("dvc exp run -n smoke"), (p.stdout, p.stderr)
    # common-reference: a missing sample file -> one line naming it
    np.savez(tmp_path / "ref.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    assert "missing.npz" in one_line_error(ddpmlab("common-reference", "--params", params, "--reference", tmp_path / "ref.npz",
                                                   "--weights", tmp_path / "w.pt", tmp_path / "missing.npz", "--device", "cpu"))
    # bench: one timed step of params.yaml's network on the CPU
    p = ddpmlab("bench", "--preset", "default", "--params", params, "--batch", 2, "--forward-batch", 2, "--steps", 1, "--warmup", 0,
                "--no-diffusers", "--device", "cpu")
    assert p.returncode == 0 and "(a) project training step" in p.stdout and "ratio" in p.stdout, p.stderr[-2000:]


def test_every_stage_door_documents_its_flags_and_the_command_dvc_runs():
    doors = sorted((ROOT / "stages").glob("*.py"))
    assert len(doors) >= 12
    for door in doors:
        p = subprocess.run([sys.executable, f"stages/{door.name}", "--help"], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=120)
        assert p.returncode == 0, (door.name, p.stderr[-1000:])
        assert p.stdout.startswith(f"usage: python stages/{door.name} "), p.stdout[:200]
        assert "parameters file (default: params.yaml)" in p.stdout
        tail = p.stdout.rstrip().splitlines()
        assert tail[-2].startswith("example (as `dvc repro` runs it") and f"python stages/{door.name} " in tail[-1], (door.name, tail[-3:])


def test_a_preset_run_twice_is_two_experiments(tmp_path):
    """`ddpmlab preset` in a real DVC project: the second run of the same preset is NAME-2, the first one kept."""
    d = tmp_path / "proj"
    d.mkdir()
    env_extra = {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env = {**os.environ, **env_extra}
    (d / "params.yaml").write_text(committed_params_file().read_text())
    (d / "dvc.yaml").write_text("stages:\n  echo:\n    cmd: python -c \"import yaml; print(yaml.safe_load(open('params.yaml'))['T'], file=open('out.txt', 'w'))\"\n"
                                "    params: [T]\n    outs: [out.txt]\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)
    for _ in range(2):
        p = ddpmlab("preset", ROOT / "presets" / "smoke.yaml", "-S", "T=123", cwd=d, env_extra=env_extra)
        assert p.returncode == 0, p.stderr[-2000:]
    assert "an experiment 'smoke' exists already; this one is 'smoke-2'" in p.stdout
    names = subprocess.run(["dvc", "exp", "list", "--name-only"], cwd=d, env=env, capture_output=True, text=True).stdout.split()
    assert sorted(names) == ["smoke", "smoke-2"]


def test_a_preset_with_a_key_given_twice_is_refused(tmp_path):
    (tmp_path / "p.yaml").write_text("train:\n  epochs: 3\n  epochs: 30\n")
    line = one_line_error(ddpmlab("preset", tmp_path / "p.yaml", "--params", committed_params_file(), "--print"))
    assert "train.epochs is given twice (lines 2 and 3)" in line

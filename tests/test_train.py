"""Training: the loss falls, resume is exact and per experiment, a damaged state never stops a run,
identical runs write identical model files, and the resume key follows the import closure."""

import shutil
from dataclasses import asdict
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ddpmlab.core.device import DeviceError, resolve_device
from ddpmlab.core.schedule import ScheduleConfig
from ddpmlab.core.unet import UNetConfig
from ddpmlab.pipeline.configs import train_config
from ddpmlab.pipeline.schema import TrainParams
from ddpmlab.core.checkpoint import CheckpointError, build_model_from_checkpoint, load_checkpoint
from ddpmlab.core.train_config import TrainSetup
from ddpmlab.core.training import TrainingDiverged, ema_update, final_metrics, train
from ddpmlab.pipeline.imports import code_files, code_fingerprint

from .conftest import ROOT, blob_images


def tiny_setup(seed=0, **train_overrides):
    tc = dict(device="cpu", epochs=4, batch_size=8, lr=2e-3, weight_decay=0.0, warmup_steps=2, grad_clip=1.0, ema_decay=0.9, prediction="eps", min_snr_gamma=0.0,
              hflip=True, val_every=2, val_draws=2, checkpoint_every=1, bf16=True, compile=False, processes=1)
    tc.update(train_overrides)
    return TrainSetup(
        UNetConfig(16, 3, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), norm_groups=8),
        ScheduleConfig("linear", 20, 1e-4, 0.02),
        train_config(TrainParams(**tc)),
        seed,
    )


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch):
    """One thread. (The code part of the resume key is the caller's: these runs pass none, so other work may
    edit this checkout while a test runs; the key's dependence on the code is tested on a private copy below.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is fastest and immune to a busy machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    ims = [np.asarray(im.convert("RGB").resize((16, 16))) for im in blob_images(20, seed=1)]
    x = np.stack(ims).astype(np.uint8)
    return x[:16], x[16:]


def weights(path, key="ema"):
    return load_checkpoint(path)[key]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_loss_falls_and_checkpoint_describes_itself(tmp_path, data):
    setup = tiny_setup(epochs=12, val_every=3)
    res = train(setup, *data, tmp_path / "state.pt", tmp_path / "model.pt")
    losses = [r["train/loss"] for r in res.history]
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:2])
    assert [r["epoch"] for r in res.history if "val/loss" in r] == [2, 5, 8, 11]
    m = final_metrics(res.history)
    assert m["epochs"] == 12 and m["steps"] == 24 and np.isfinite(m["val_loss"])
    assert res.img_per_s > 0 and len(res.timings) == 12
    # sampling rebuilds the network and the schedule from the checkpoint alone
    model, sched, ckpt = build_model_from_checkpoint(load_checkpoint(tmp_path / "model.pt"))
    assert sched.T == 20 and ckpt["model_config"]["ch"] == 16 and ckpt["model_config"]["in_channels"] == 3 and len(ckpt["history"]) == 12
    assert ckpt["schedule_config"] == {"name": "linear", "T": 20, "beta_start": 1e-4, "beta_end": 0.02}
    assert model(torch.zeros(1, 3, 16, 16), torch.tensor([3])).shape == (1, 3, 16, 16)


def test_min_snr_weights_follow_hang_et_al_and_change_only_the_gradient(tmp_path, data):
    """min(SNR, gamma)/SNR: 1 where SNR <= gamma (large t), gamma/SNR below; a gamma above every SNR trains
    exactly like the uniform loss, gamma 5 trains differently, and the logged loss stays the unweighted one."""
    from ddpmlab.core.schedule import Schedule
    from ddpmlab.core.training import loss_weights

    sched = Schedule.from_params("linear", 1000)
    t = torch.arange(1000)
    w = loss_weights(sched, t, 5.0).double().numpy()
    snr = sched.alpha_bar / (1 - sched.alpha_bar)
    assert np.allclose(w, np.minimum(snr, 5.0) / snr, rtol=1e-6) and w.max() == 1.0
    assert np.all(w[snr <= 5] == 1) and np.all(w[snr > 5] < 1) and w[0] < 1e-3
    assert torch.equal(loss_weights(sched, t, 0.0), torch.ones(1000))
    # the v form weighs ||v - v_theta||^2 = ||eps - eps_theta||^2 / a_bar: the same weight on the eps-space error
    wv = loss_weights(sched, t, 5.0, "v").double().numpy()
    assert np.allclose(wv / sched.alpha_bar, w, rtol=1e-5)

    runs = {}
    for name, gamma in (("uniform", 0.0), ("huge", 1e9), ("five", 5.0)):
        runs[name] = train(tiny_setup(epochs=2, min_snr_gamma=gamma), *data, tmp_path / f"{name}.state", tmp_path / f"{name}.pt")
    assert_same_weights(weights(tmp_path / "uniform.pt"), weights(tmp_path / "huge.pt"))
    five, uniform = weights(tmp_path / "five.pt"), weights(tmp_path / "uniform.pt")
    assert any(not torch.equal(five[k], uniform[k]) for k in five)
    # one step from the same initial weights and draws: the logged loss is the unweighted one, so it is equal
    first = [train(tiny_setup(epochs=1, batch_size=16, min_snr_gamma=g), *data, tmp_path / f"1-{g}.state", tmp_path / f"1-{g}.pt")
             .history[0]["train/loss"] for g in (0.0, 5.0)]
    assert first[0] == first[1]


def test_v_prediction_trains_and_the_checkpoint_samples_as_an_eps_predictor(tmp_path, data):
    from ddpmlab.core.sampling import EpsFromV, SamplerSpec, sample

    res = train(tiny_setup(epochs=12, val_every=3, prediction="v"), *data, tmp_path / "state.pt", tmp_path / "model.pt")
    losses = [r["train/loss"] for r in res.history]  # eps-space, as for eps-prediction
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:2]) and np.isfinite(res.history[-1]["val/loss"])
    ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt["train_config"]["prediction"] == "v"
    model, sched, _ = build_model_from_checkpoint(ckpt)
    assert isinstance(model, EpsFromV)
    x, _ = sample(model, sched, SamplerSpec("ddim", 5), [0, 1], 0, (3, 16, 16), "cpu")
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    ckpt["train_config"]["prediction"] = "x0"
    with pytest.raises(CheckpointError, match="prediction"):
        build_model_from_checkpoint(ckpt)


def test_identical_runs_write_byte_identical_model_files(tmp_path, data):
    """No timings (or anything else run-dependent) in models/model.pt, so DVC sees no change."""
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        train(tiny_setup(epochs=2), *data, tmp_path / run / "train_state.pt", tmp_path / run / "model.pt")
    a, b = (tmp_path / "a/model.pt").read_bytes(), (tmp_path / "b/model.pt").read_bytes()
    assert a == b
    hist = load_checkpoint(tmp_path / "a/model.pt")["history"]
    resid = {f"val/resid_{k}" for k in ("excess_kurtosis", "rho_h", "rho_v", "rho_c")}  # the check's effect sizes over training
    assert {k for r in hist for k in r} <= {"epoch", "step", "train/loss", "lr", "val/loss", "val/loss_raw"} | resid
    assert resid <= set(hist[-1])  # logged at every validation point
    assert "resume_key" not in load_checkpoint(tmp_path / "a/model.pt")


def test_resume_is_exact(tmp_path, data):
    """2 epochs, stop, resume 2 more == 4 epochs straight, bit for bit (all randomness is keyed by step)."""
    train(tiny_setup(), *data, tmp_path / "full_state.pt", tmp_path / "full.pt")
    part = train(tiny_setup(), *data, tmp_path / "state.pt", tmp_path / "model.pt", stop_after_epochs=2)
    assert not (tmp_path / "model.pt").exists() and len(part.history) == 2
    rest = train(tiny_setup(), *data, tmp_path / "state.pt", tmp_path / "model.pt")
    assert rest.resumed_from_epoch == 2 and len(rest.history) == 4
    assert_same_weights(weights(tmp_path / "full_state.pt", "model"), weights(tmp_path / "state.pt", "model"))
    assert [r["train/loss"] for r in load_checkpoint(tmp_path / "full.pt")["history"]] == [r["train/loss"] for r in rest.history]


def test_another_experiment_parks_the_state_and_it_resumes_later(tmp_path, data, capsys):
    """Interrupted experiment A, then experiment B in the same place, then A again: A resumes
    where it stopped and ends bit-identical to an uninterrupted A; B's state is kept too."""
    A, B = tiny_setup(), tiny_setup(lr=1e-3)
    train(A, *data, tmp_path / "ref_state.pt", tmp_path / "ref.pt")
    state, model = tmp_path / "train_state.pt", tmp_path / "model.pt"
    train(A, *data, state, model, stop_after_epochs=2)
    b = train(B, *data, state, model)
    assert b.resumed_from_epoch == 0
    assert "belongs to another experiment" in capsys.readouterr().out
    parked = sorted(p.name for p in tmp_path.glob("train_state.*.pt"))
    assert len(parked) == 1, parked  # A's state, parked under its key
    a = train(A, *data, state, model)
    assert a.resumed_from_epoch == 2
    assert_same_weights(weights(tmp_path / "ref.pt"), weights(model))
    assert (tmp_path / "ref.pt").read_bytes() == model.read_bytes()
    # B's finished state was parked in turn; running B again resumes it instead of retraining
    assert len(list(tmp_path.glob("train_state.*.pt"))) == 1
    assert train(B, *data, state, model).resumed_from_epoch == 4


def test_bookkeeping_params_resume_but_the_experiment_params_do_not(tmp_path, data):
    train(tiny_setup(), *data, tmp_path / "state.pt", tmp_path / "model.pt", stop_after_epochs=2)
    assert train(tiny_setup(checkpoint_every=3, val_every=1), *data, tmp_path / "state.pt", tmp_path / "model.pt",
                 stop_after_epochs=1).resumed_from_epoch == 2
    assert train(tiny_setup(epochs=5), *data, tmp_path / "state.pt", tmp_path / "model.pt").resumed_from_epoch == 0  # run length
    assert train(tiny_setup(seed=1), *data, tmp_path / "state.pt", tmp_path / "model.pt").resumed_from_epoch == 0
    x, v = data
    x2 = x.copy()
    x2[0, 0, 0, 0] ^= 1  # one pixel of the data
    assert train(tiny_setup(), x2, v, tmp_path / "state.pt", tmp_path / "model.pt").resumed_from_epoch == 0


def damaged(kind: str, good: bytes) -> bytes:
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "empty":
        return b""
    if kind == "garbage":
        return bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "pickled-code"])
def test_damaged_state_is_moved_aside_and_training_starts_afresh(tmp_path, data, capsys, kind):
    """A damaged models/train_state.pt costs one line, never a traceback; the file is kept aside."""
    state, model = tmp_path / "train_state.pt", tmp_path / "model.pt"
    train(tiny_setup(epochs=2), *data, state, model)
    fresh = model.read_bytes()
    model.unlink()
    if kind == "pickled-code":  # a pickle that would call a function on load (weights_only refuses it)
        torch.save({"x": Path("/nonexistent")}, state)
    else:
        state.write_bytes(damaged(kind, state.read_bytes()))
    capsys.readouterr()
    res = train(tiny_setup(epochs=2), *data, state, model)
    out = capsys.readouterr().out
    assert res.resumed_from_epoch == 0 and model.read_bytes() == fresh
    aside = list(tmp_path.glob("train_state.pt.corrupt-*"))
    assert len(aside) == 1
    line = next(ln for ln in out.splitlines() if "corrupt-" in ln)
    assert str(state) in line and "starting afresh" in line and "weights_only" not in out


def test_damaged_state_through_the_stage_is_one_line(tmp_path):
    from .test_kill_resume import env, setup_run

    cmd = setup_run(tmp_path, epochs=2)
    (tmp_path / "state.pt").write_bytes(b"PK\x03\x04 not really a zip")
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stdout + r.stderr and "weights_only" not in r.stdout + r.stderr
    assert "not a readable checkpoint" in r.stdout and (tmp_path / "model.pt").is_file()


def test_unreadable_model_file_is_one_line(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"model\.pt: not a readable checkpoint") as e:
        load_checkpoint(p)
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("deferred", [False, True])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data, monkeypatch, deferred):
    """deferred: the CUDA path (Runtime.defer_checks), where the check waits for the epoch's one host sync."""
    import ddpmlab.core.training as L
    from ddpmlab.core.runtime import Runtime

    monkeypatch.setattr(Runtime, "defer_checks", property(lambda self: deferred))

    real, calls = L.per_sample_loss, []

    def poisoned(*a, **k):  # the 5th training step (first of epoch 2) produces NaN
        out = real(*a, **k)
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == 5:
                return out * float("nan")
        return out

    monkeypatch.setattr(L, "per_sample_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 4.*last good checkpoint"):
        train(tiny_setup(epochs=3), *data, tmp_path / "state.pt", tmp_path / "model.pt")
    state = load_checkpoint(tmp_path / "state.pt")
    assert state["epoch"] == 2 and state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "model.pt").exists()


def test_progress_is_visible_early(tmp_path, data, capsys, monkeypatch):
    """A line before and after torch.compile's first (compiling) step, and a checkpoint after the
    first epoch whatever train.checkpoint_every says, so a stall shows at once."""
    monkeypatch.setattr(torch, "compile", lambda net: net)  # the messages, not the compiler (no GPU here)
    seen = []

    def log(rec):
        if rec["epoch"] == 1:  # logged before epoch 2's checkpoint: only the early one can exist
            seen.append(load_checkpoint(tmp_path / "state.pt")["epoch"])

    train(tiny_setup(epochs=3, checkpoint_every=100, compile=True), *data, tmp_path / "state.pt", tmp_path / "model.pt", log=log)
    assert seen == [1]
    out = capsys.readouterr().out
    assert "torch.compile: compiling" in out and "torch.compile: first step done" in out
    assert out.index("compiling") < out.index("first step done")


def test_checkpoints_load_with_weights_only(tmp_path, data):
    train(tiny_setup(epochs=1), *data, tmp_path / "state.pt", tmp_path / "model.pt")
    torch.load(tmp_path / "state.pt", weights_only=True)
    torch.load(tmp_path / "model.pt", weights_only=True)


# ---------------------------------------------------------------------------------------------
# The resume key follows the import closure of stages/train.py


def test_code_files_are_the_train_stage_deps_of_dvc_yaml():
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    listed = {d for d in deps if d.startswith(("src/", "stages/"))}
    hashed = {p.relative_to(ROOT).as_posix() for p in code_files(ROOT / "stages/train.py")}
    assert hashed == listed, f"hashed only: {sorted(hashed - listed)}, listed only: {sorted(listed - hashed)}"
    assert "src/ddpmlab/core/images.py" in hashed and "src/ddpmlab/core/unet.py" in hashed


def test_code_fingerprint_changes_with_every_closure_file_and_no_other(tmp_path):
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (tmp_path / "stages").mkdir()
    shutil.copy(ROOT / "stages/train.py", tmp_path / "stages/train.py")
    entry, src = tmp_path / "stages/train.py", tmp_path / "src"
    base = code_fingerprint(entry, src)
    closure = code_files(entry, src)
    images = src / "ddpmlab/core/images.py"
    assert images in closure
    for f in closure:  # e.g. a change to to_model's pixel scaling must not resume into the old run
        old = f.read_bytes()
        f.write_bytes(old + b"\n# changed\n")
        assert code_fingerprint(entry, src) != base, f
        f.write_bytes(old)
    assert code_fingerprint(entry, src) == base
    # unrelated code, and every figure helper: a plot tweak never changes the resume key
    for rel in ("core/fid.py", "pipeline/figures.py", "pipeline/residual_figures.py", "pipeline/stages/report.py"):
        f = src / "ddpmlab" / rel
        assert f not in closure, rel
        f.write_bytes(f.read_bytes() + b"\n# unrelated\n")
        assert code_fingerprint(entry, src) == base, rel


# ---------------------------------------------------------------------------------------------
# Devices


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line():
    with pytest.raises(DeviceError, match=r"no CUDA device is visible.*use auto or cpu") as e:
        resolve_device("cuda")
    assert "\n" not in str(e.value)
    with pytest.raises(DeviceError, match="unknown"):
        resolve_device("tpu")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_train_stage_with_cuda_without_a_gpu_is_one_line(tmp_path):
    from .test_kill_resume import env, setup_run

    cmd = setup_run(tmp_path, epochs=1)
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    p["train"]["device"] = "cuda"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "train.device" in r.stderr and "no CUDA device" in r.stderr, r.stderr



def test_lr_schedule_warm_up_then_constant_or_cosine_to_zero():
    from ddpmlab.core.training import lr_at

    assert [lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]  # Ho et al.
    cos = [lr_at(s, 1.0, 4, "cosine", 14) for s in range(14)]
    assert cos[:4] == [0.25, 0.5, 0.75, 1.0] and 0.97 < cos[4] < 1.0  # the same warm-up, then the decay starts
    assert abs(cos[8] - 0.5) < 1e-12 and cos[-1] == 0.0  # half-way through the decay lr / 2; 0 at the last step
    assert all(a > b for a, b in zip(cos[3:], cos[4:]))  # strictly decreasing after the warm-up
    assert lr_at(20, 1.0, 4, "cosine", 14) == 0.0


def test_cosine_lr_decay_changes_training_and_is_recorded(tmp_path, data):
    base = train(tiny_setup(epochs=3), *data, tmp_path / "a.pt", tmp_path / "ma.pt").history
    dec = train(tiny_setup(epochs=3, lr_decay="cosine"), *data, tmp_path / "b.pt", tmp_path / "mb.pt").history
    assert base[-1]["lr"] == 2e-3 and dec[-1]["lr"] == 0.0 and dec[0]["lr"] == base[0]["lr"]  # epoch 1 is warm-up-bound in both
    assert dec[-1]["train/loss"] != base[-1]["train/loss"]
    assert load_checkpoint(tmp_path / "mb.pt")["train_config"]["lr_decay"] == "cosine"


def test_ema_warm_up_constant_sets_the_averaging_window():
    from ddpmlab.core.training import ema_decay_at

    assert [ema_decay_at(n, 0.999) for n in (0, 10, 8990, 9000)] == [0.1, 11 / 20, 0.999, 0.999]  # TF's c = 10, as before
    xs = [float(v) for v in np.random.default_rng(0).normal(size=50)]  # x_0 = the initial weights, then one per step
    ema = xs[0]
    for n, x in enumerate(xs[1:]):
        ema += (1 - ema_decay_at(n, 0.9999, warmup=2.0)) * (x - ema)
    assert abs(ema - np.mean(xs)) < 1e-12  # c = 2: the plain mean of every iterate
    w10 = [ema_decay_at(n, 0.999, 10.0) for n in range(100, 3000, 100)]
    w4 = [ema_decay_at(n, 0.999, 4.0) for n in range(100, 3000, 100)]
    assert all(b > a for a, b in zip(w10, w4))  # a smaller c keeps more of the past at every step


def test_ema_warm_up_changes_the_ema_only_and_is_recorded(tmp_path, data):
    a = train(tiny_setup(epochs=3), *data, tmp_path / "a.pt", tmp_path / "ma.pt").history
    b = train(tiny_setup(epochs=3, ema_warmup=2.0), *data, tmp_path / "b.pt", tmp_path / "mb.pt").history
    assert [h["train/loss"] for h in a] == [h["train/loss"] for h in b]  # the trained weights follow the same path
    ca, cb = load_checkpoint(tmp_path / "ma.pt"), load_checkpoint(tmp_path / "mb.pt")
    assert cb["train_config"]["ema_warmup"] == 2.0 and ca["train_config"]["ema_warmup"] == 10.0
    assert any(not torch.equal(x, y) for x, y in zip(ca["ema"].values(), cb["ema"].values()))
    with pytest.raises(ValueError, match="ema_warmup"):
        TrainParams.model_validate({**asdict(tiny_setup().train), "ema_warmup": 1.5})


def test_stratified_t_puts_one_t_in_each_stratum_and_uniform_is_unchanged():
    from ddpmlab.core.streams import Stream, stream_seed
    from ddpmlab.core.training import step_randomness

    T, B = 1000, 16
    for step in range(50):
        t, _, _ = step_randomness(B, T, (3, 4, 4), 0, step, "cpu", "stratified")
        assert sorted((t * B // T).tolist()) == list(range(B))  # exactly one t in each of the B strata of 0..T-1
        t_old, noise, flip = step_randomness(B, T, (3, 4, 4), 0, step, "cpu")
        g = torch.Generator().manual_seed(stream_seed(0, Stream.TRAIN_NOISE, step))  # the uniform draws of the TRAIN_NOISE stream
        assert torch.equal(t_old, torch.randint(0, T, (B,), generator=g)) and torch.equal(noise, torch.randn((B, 3, 4, 4), generator=g))
    ts = torch.cat([step_randomness(B, T, (1, 1, 1), 0, s, "cpu", "stratified")[0] for s in range(2000)])
    counts = torch.bincount(ts * 10 // T, minlength=10).double()  # each t_i is uniform: tenths of 0..T-1 equally full
    assert ((counts - len(ts) / 10).abs() / len(ts)).max() < 0.01  # 32,000 draws; 1% is > 5 binomial sd
    assert step_randomness(5, 7, (1, 1, 1), 3, 0, "cpu", "stratified")[0].max() <= 6  # T not divisible by B
    with pytest.raises(ValueError, match="t_sampling"):
        TrainParams.model_validate({**asdict(tiny_setup().train), "t_sampling": "lognormal"})


def test_t_sampling_and_adam_beta2_change_training_and_are_recorded(tmp_path, data):
    base = train(tiny_setup(epochs=2), *data, tmp_path / "a.pt", tmp_path / "ma.pt").history
    strat = train(tiny_setup(epochs=2, t_sampling="stratified"), *data, tmp_path / "b.pt", tmp_path / "mb.pt").history
    beta = train(tiny_setup(epochs=2, adam_beta2=0.99), *data, tmp_path / "c.pt", tmp_path / "mc.pt").history
    assert strat[0]["train/loss"] != base[0]["train/loss"]  # other t from the first step
    assert beta[-1]["train/loss"] != base[-1]["train/loss"]  # other updates
    assert load_checkpoint(tmp_path / "mb.pt")["train_config"]["t_sampling"] == "stratified"
    assert load_checkpoint(tmp_path / "mc.pt")["train_config"]["adam_beta2"] == 0.99
    assert load_checkpoint(tmp_path / "ma.pt")["train_config"]["adam_beta2"] == 0.999
    for bad in (1.0, 0.0):
        with pytest.raises(ValueError, match="adam_beta2"):
            TrainParams.model_validate({**asdict(tiny_setup().train), "adam_beta2": bad})


def test_guide_fraction_keeps_the_early_ema_exactly_and_through_a_resume(tmp_path, data):
    from ddpmlab.core.training import guide_epoch

    assert [guide_epoch(tiny_setup(epochs=e, guide_fraction=f).train) for e, f in ((400, 0.25), (4, 0.5), (3, 0.01), (9, 0.0))] == [100, 2, 1, 0]
    train(tiny_setup(epochs=2), *data, tmp_path / "s2.pt", tmp_path / "m2.pt")
    train(tiny_setup(epochs=4, guide_fraction=0.5), *data, tmp_path / "s4.pt", tmp_path / "m4.pt")
    early, full = load_checkpoint(tmp_path / "m2.pt"), load_checkpoint(tmp_path / "m4.pt")
    assert "ema_guide" not in early and full["train_config"]["guide_fraction"] == 0.5
    assert_same_weights(full["ema_guide"], early["ema"])  # the guide is the EMA after 2 of the 4 epochs, to the bit
    assert any(not torch.equal(full["ema"][k], full["ema_guide"][k]) for k in full["ema"])
    # interrupted after epoch 3 (the guide taken, then checkpointed) and resumed: the same file
    train(tiny_setup(epochs=4, guide_fraction=0.5), *data, tmp_path / "r.pt", tmp_path / "mr.pt", stop_after_epochs=3)
    assert "ema_guide" in load_checkpoint(tmp_path / "r.pt") and not (tmp_path / "mr.pt").exists()
    train(tiny_setup(epochs=4, guide_fraction=0.5), *data, tmp_path / "r.pt", tmp_path / "mr.pt")
    assert (tmp_path / "mr.pt").read_bytes() == (tmp_path / "m4.pt").read_bytes()
    with pytest.raises(ValueError, match="guide_fraction"):
        TrainParams.model_validate({**asdict(tiny_setup().train), "guide_fraction": 1.0})


def test_ema_update_stays_out_of_the_autograd_graph():
    model = torch.nn.Linear(3, 2)
    ema = torch.nn.Linear(3, 2).requires_grad_(False)
    model(torch.randn(4, 3)).sum().backward()  # a training step's graph exists around the update
    for _ in range(3):
        ema_update(ema, model, 0.9)
    assert all(p.grad_fn is None and not p.requires_grad for p in ema.parameters())  # else each step chains a graph

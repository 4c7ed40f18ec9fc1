"""Training: the loss falls, resume is exact, a changed experiment does not resume, NaN stops cleanly."""

import dataclasses

import numpy as np
import pytest
import torch

from ddpmlab.config import ModelConfig, ScheduleConfig, TrainConfig
from ddpmlab.training.loop import TrainingDiverged, TrainSetup, build_model_from_checkpoint, final_metrics, load_checkpoint, train

from .conftest import blob_images


def tiny_setup(**train_overrides):
    tc = dict(device="cpu", epochs=4, batch_size=8, lr=2e-3, weight_decay=0.0, warmup_steps=2, grad_clip=1.0, ema_decay=0.9,
              hflip=True, val_every=2, val_draws=2, checkpoint_every=1, seed=0)
    tc.update(train_overrides)
    return TrainSetup(
        ModelConfig(16, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), norm_groups=8),
        ScheduleConfig("linear", 20, 1e-4, 0.02),
        TrainConfig(**tc),
    )


@pytest.fixture(scope="module")
def data():
    ims = [np.asarray(im.convert("RGB").resize((16, 16))) for im in blob_images(20, seed=1)]
    x = np.stack(ims).astype(np.uint8)
    return x[:16], x[16:]


def weights(path, key="ema"):
    return load_checkpoint(path)[key]


def test_loss_falls_and_checkpoint_describes_itself(tmp_path, data):
    setup = tiny_setup(epochs=12, val_every=3)
    res = train(setup, *data, tmp_path / "state.pt", tmp_path / "model.pt")
    losses = [r["train/loss"] for r in res.history]
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:2])
    assert [r["epoch"] for r in res.history if "val/loss" in r] == [2, 5, 8, 11]
    m = final_metrics(res.history)
    assert m["epochs"] == 12 and m["steps"] == 24 and np.isfinite(m["val_loss"])
    # sampling rebuilds the network from the checkpoint alone
    model, sched, ckpt = build_model_from_checkpoint(load_checkpoint(tmp_path / "model.pt"))
    assert sched.T == 20 and ckpt["model_config"]["ch"] == 16 and len(ckpt["history"]) == 12
    assert model(torch.zeros(1, 3, 16, 16), torch.tensor([3])).shape == (1, 3, 16, 16)


def test_same_params_same_weights(tmp_path, data):
    train(tiny_setup(epochs=2), *data, tmp_path / "a.pt", tmp_path / "ma.pt")
    train(tiny_setup(epochs=2), *data, tmp_path / "b.pt", tmp_path / "mb.pt")
    for k, v in weights(tmp_path / "ma.pt").items():
        assert torch.equal(v, weights(tmp_path / "mb.pt")[k]), k


def test_resume_is_exact(tmp_path, data):
    """2 epochs, stop, resume 2 more == 4 epochs straight, bit for bit (all randomness is keyed by step)."""
    train(tiny_setup(), *data, tmp_path / "full_state.pt", tmp_path / "full.pt")
    part = train(tiny_setup(), *data, tmp_path / "state.pt", tmp_path / "model.pt", stop_after_epochs=2)
    assert not (tmp_path / "model.pt").exists() and len(part.history) == 2
    rest = train(tiny_setup(), *data, tmp_path / "state.pt", tmp_path / "model.pt")
    assert rest.resumed_from_epoch == 2 and len(rest.history) == 4
    full, resumed = weights(tmp_path / "full_state.pt", "model"), weights(tmp_path / "state.pt", "model")
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    assert [r["train/loss"] for r in load_checkpoint(tmp_path / "full.pt")["history"]] == [r["train/loss"] for r in rest.history]


def test_changed_params_do_not_resume(tmp_path, data):
    train(tiny_setup(epochs=2), *data, tmp_path / "state.pt", tmp_path / "model.pt")
    res = train(tiny_setup(epochs=2, lr=1e-3), *data, tmp_path / "state.pt", tmp_path / "model.pt")
    assert res.resumed_from_epoch == 0
    # bookkeeping keys (device, how often to checkpoint/validate) do not invalidate a run
    res = train(tiny_setup(epochs=3, lr=1e-3, checkpoint_every=2), *data, tmp_path / "state.pt", tmp_path / "model.pt")
    assert res.resumed_from_epoch == 0  # epochs is part of the experiment (a different run length)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data, monkeypatch):
    import ddpmlab.training.loop as T

    real, calls = T.per_sample_loss, []

    def poisoned(*a, **k):  # the 5th training step (first of epoch 2) produces NaN
        out = real(*a, **k)
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == 5:
                return out * float("nan")
        return out

    monkeypatch.setattr(T, "per_sample_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 4.*last good checkpoint"):
        train(tiny_setup(epochs=3), *data, tmp_path / "state.pt", tmp_path / "model.pt")
    state = load_checkpoint(tmp_path / "state.pt")
    assert state["epoch"] == 2 and state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "model.pt").exists()


def test_checkpoints_load_with_weights_only(tmp_path, data):
    train(tiny_setup(epochs=1), *data, tmp_path / "state.pt", tmp_path / "model.pt")
    torch.load(tmp_path / "state.pt", weights_only=True)
    torch.load(tmp_path / "model.pt", weights_only=True)

"""The sampler sweep as a library function: one row per setting, no duplicates, FID/KID/precision/recall
columns, the checkpoint's T, written outputs. A stand-in denoiser and feature extractor replace the
trained U-Net and Inception, so no weights are needed."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ddpmlab.core.schedule import Schedule
from ddpmlab.core import sweep
from ddpmlab.core.checkpoint import CheckpointMismatch
from ddpmlab.pipeline.stages import sweep as sweep_stage
from ddpmlab.core.metrics import MetricSpec
from ddpmlab.pipeline.schema import load_params

from .conftest import committed_params_file


class ConstantEps(torch.nn.Module):
    """eps_theta(x, t) = c * x: deterministic, cheap, and its samples depend on the sampler."""

    def __init__(self, c: float = 0.5):
        super().__init__()
        self.c = c

    def forward(self, x, t):
        return self.c * x


def pixel_stats(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> [N, 6]: per-channel mean and std, a stand-in for Inception features."""
    x = images.reshape(len(images), -1, 3).astype(np.float64) / 255
    return np.concatenate([x.mean(1), x.std(1)], axis=1)


@pytest.fixture(scope="module")
def table():
    sched = Schedule.from_params("linear", 50)
    ref = pixel_stats(np.random.default_rng(0).integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8))
    specs = sweep.sweep_specs([10, 2, 5, 10], [1.0, 0.0], ddpm=True, T=50)
    return sweep.run_sweep(ConstantEps(), sched, (3, 8, 8), specs, n=6, batch=4, seed=0, extract=pixel_stats, ref=ref,
                           metrics=MetricSpec(kid_subsets=5, kid_subset_size=50, prc_k=3, seed=0))


def test_specs_are_unique_sorted_and_refuse_steps_above_T():
    specs = sweep.sweep_specs([10, 2, 5, 10, 2], [1.0, 0.0, 1.0], ddpm=False, T=50)
    assert [(s.sampler, s.steps, s.eta) for s in specs] == [("ddim", n, e) for e in (0.0, 1.0) for n in (2, 5, 10)]
    assert sweep.sweep_specs([5], [0.0], ddpm=True, T=50)[-1].sampler == "ddpm"
    with pytest.raises(CheckpointMismatch, match=r"step counts \[60\] exceed the checkpoint.s T = 50"):
        sweep.sweep_specs([5, 60], [0.0], ddpm=False, T=50)


def test_rows_and_columns(table):
    assert list(table.columns) == sweep.COLUMNS
    assert len(table) == 2 * 3 + 1  # 2 etas x 3 unique step counts + DDPM
    assert table[["sampler", "steps", "eta"]].drop_duplicates().shape[0] == len(table)
    ddpm = table[table["sampler"] == "ddpm"].iloc[0]
    assert ddpm["steps"] == 50 and ddpm["eta"] == 1.0
    assert (table["n_generated"] == 6).all() and (table["n_reference"] == 20).all()
    assert (table["kid_subset_size"] == 6).all() and (table["prc_k"] == 3).all()  # capped at the 6 samples
    for col in ("fid", "kid", "kid_std", "seconds"):
        assert np.isfinite(table[col]).all(), col
    assert table["precision"].between(0, 1).all() and table["recall"].between(0, 1).all()
    # the sampler matters: the settings do not all give the same images
    assert table["kid"].nunique() > 1


def test_rows_do_not_depend_on_batch_size(table):
    """Image i depends only on (seed, i), so batching must not change a row."""
    sched = Schedule.from_params("linear", 50)
    ref = pixel_stats(np.random.default_rng(0).integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8))
    again = sweep.run_sweep(ConstantEps(), sched, (3, 8, 8), sweep.sweep_specs([5], [0.0], False, 50), n=6, batch=6, seed=0,
                            extract=pixel_stats, ref=ref, metrics=MetricSpec(5, 50, 3, 0))
    row = table[(table["sampler"] == "ddim") & (table["steps"] == 5) & (table["eta"] == 0.0)].iloc[0]
    for col in ("fid", "kid", "precision", "recall"):
        assert again.iloc[0][col] == pytest.approx(row[col], rel=1e-9, abs=1e-12), col


def test_summary_and_written_outputs(table, tmp_path):
    s = sweep.summary(table)
    b = table.loc[table["kid"].idxmin()]
    assert s["best_kid"] == b["kid"] and s["best_precision"] == b["precision"] and s["configs"] == 7
    assert s["best_kid_sampler"].startswith(b["sampler"]) and s["prc_k"] == 3
    o = sweep_stage.write(table, tmp_path / "sweep")
    back = pd.read_csv(o.table)
    assert list(back.columns) == sweep.COLUMNS and len(back) == 7
    assert json.loads(o.metrics.read_text())["configs"] == 7
    assert o.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_T_mismatch_is_one_line():
    P = load_params(committed_params_file())
    ckpt = {"schedule_config": {"name": P.schedule.name, "T": P.T // 2, "beta_start": P.schedule.beta_start, "beta_end": P.schedule.beta_end}}
    with pytest.raises(CheckpointMismatch) as e:
        sweep_stage.sweep_checkpoint(ckpt, P, pixel_stats, np.zeros((4, 6)), "cpu")
    msg = str(e.value)
    assert "\n" not in msg and f"T = {P.T}" in msg and f"trained with {P.T // 2}" in msg


def test_guidance_without_a_guide_names_both_keys():
    from ddpmlab.pipeline.configs import check_checkpoint, schedule_config

    P = load_params(committed_params_file())
    P = P.model_copy(update={"sample": P.sample.model_copy(update={"guidance": 2.5})})
    ckpt = {"schedule_config": schedule_config(P).to_dict()}
    with pytest.raises(CheckpointMismatch, match=r"sample.guidance = 2.5 .* train.guide_fraction > 0"):
        check_checkpoint(P, ckpt, "m.pt")
    check_checkpoint(P, ckpt, "m.pt", sampling=False)  # the residual check uses the EMA alone
    check_checkpoint(P, {**ckpt, "ema_guide": {}}, "m.pt")


def test_a_dict_that_is_not_a_checkpoint_is_one_line():
    """e.g. the Inception weights passed as --model: a CheckpointError (exit 2), not a KeyError."""
    from ddpmlab.core.checkpoint import CheckpointError
    from ddpmlab.pipeline.configs import check_checkpoint

    from .conftest import committed_params_file
    from ddpmlab.pipeline.schema import load_params

    with pytest.raises(CheckpointError, match="models/model.pt holds no schedule_config"):
        check_checkpoint(load_params(committed_params_file()), {"Conv2d_1a_3x3.conv.weight": 0}, "models/model.pt")

"""Bad parameter values fail at stage start with the key and the allowed values."""

import copy

import pytest

from ddpmlab.config import ModelConfig, ResidualsConfig, SampleConfig, ScheduleConfig, TrainConfig
from ddpmlab.errors import ParamError
from ddpmlab.data.prepare import prepare_from_params


def with_(params, dotted, value):
    p = copy.deepcopy(params)
    node = p
    *head, last = dotted.split(".")
    for k in head:
        node = node[k]
    node[last] = value
    return p


def test_default_params_are_valid(params):
    ScheduleConfig.from_params(params)
    ModelConfig.from_params(params)
    TrainConfig.from_params(params)
    SampleConfig.from_params(params)
    ResidualsConfig.from_params(params)


@pytest.mark.parametrize(
    "key, value, build, message",
    [
        ("T", 0, ScheduleConfig, r"T = 0 .*integer >= 1"),
        ("T", "many", SampleConfig, r"T = 'many'"),
        ("schedule.name", "quadratic", ScheduleConfig, r"schedule.name = 'quadratic'.*one of linear, cosine"),
        ("sample.sampler", "euler", SampleConfig, r"sample.sampler = 'euler'.*one of ddpm, ddim"),
        ("sample.n_samples", 1, SampleConfig, r"sample.n_samples = 1 .*>= 2"),
        ("sample.steps", 5000, SampleConfig, r"sample.steps = 5000 .*at most T = 1000"),
        ("sample.variance", "huge", SampleConfig, r"one of small, large"),
        ("prepare.image_size", 36, ModelConfig, r"prepare.image_size = 36 .*multiple of 8"),
        ("model.norm_groups", 5, ModelConfig, r"model.norm_groups = 5"),
        ("train.device", "tpu", TrainConfig, r"train.device = 'tpu'.*auto, cpu, cuda"),
        ("train.lr", -1, TrainConfig, r"train.lr"),
        ("train.hflip", "yes", TrainConfig, r"train.hflip = 'yes'.*true or false"),
        ("residuals.dispersion_range", [2, 3], ResidualsConfig, r"residuals.dispersion_range"),
        ("residuals.t_bins", 2000, ResidualsConfig, r"residuals.t_bins = 2000 .*at most T"),
    ],
)
def test_bad_values_name_key_and_allowed(params, key, value, build, message):
    with pytest.raises(ParamError, match=message):
        build.from_params(with_(params, key, value))


def test_missing_key_is_named(params):
    p = copy.deepcopy(params)
    del p["train"]["epochs"]
    with pytest.raises(ParamError, match=r"train.epochs = '<missing>'"):
        TrainConfig.from_params(p)


@pytest.mark.parametrize("vf", [0, 1, 1.5, -0.1])
def test_val_fraction_outside_open_interval(params, vf, image_folder):
    with pytest.raises(ParamError, match=r"prepare.val_fraction = .* in \(0, 1\)"):
        prepare_from_params(with_(params, "prepare.val_fraction", vf), image_folder)


def test_unknown_square_mode(params, image_folder):
    with pytest.raises(ParamError, match=r"prepare.square = 'stretch'.*pad, crop"):
        prepare_from_params(with_(params, "prepare.square", "stretch"), image_folder)


def test_scientific_notation_without_dot_is_a_float(tmp_path):
    """`dvc exp run -S train.lr=0.0000001` writes `lr: 1e-07`, which plain PyYAML would read as a string."""
    from ddpmlab.config import load_params

    (tmp_path / "p.yaml").write_text("train:\n  lr: 1e-07\n  other: 2E+3\n  name: e5\n  ver: '1e-3'\n")
    p = load_params(tmp_path / "p.yaml")["train"]
    assert p["lr"] == 1e-07 and p["other"] == 2000.0 and p["name"] == "e5" and p["ver"] == "1e-3"

"""The presets (presets/*.yaml) are valid experiments; the GPU preset's compiled step keeps one shape."""

import math
import shutil

import pytest
import yaml

from ddpmlab.core.unet import UNet, count_params
from ddpmlab.pipeline.configs import train_setup
from ddpmlab.pipeline.data.prepare import split_indices
from ddpmlab.pipeline.schema import validate
from ddpmlab.tools import preset as tool

from .conftest import ROOT, committed_params, committed_params_file

N_ARTWORKS = 1008  # the pokemon==0.36 sdist, data.pypi.id_range: []
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def preset_params(name: str = "gpu") -> dict:
    """The committed params.yaml with a preset applied, as `dvc exp run -S` applies it."""
    base = committed_params()
    return tool.apply(base, tool.overrides(tool.read_preset(ROOT / "presets" / f"{name}.yaml"), base, name))


def test_the_presets_are_there():
    assert {p.stem for p in PRESETS} >= {"gpu", "smoke", "mnist", "fashion_mnist", "cifar10_cats", "flowers102"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_preset_validates_and_dvc_applies_it_as_we_do(path, tmp_path):
    """The -S flags the tool passes, applied by dvc's own override code, give the params the tool validated."""
    dvc_hydra = pytest.importorskip("dvc.utils.hydra")
    cmd = tool.command(path, committed_params_file(), None, [])
    assert cmd[:5] == ["dvc", "exp", "run", "-n", path.stem]
    sets = [cmd[i + 1] for i, w in enumerate(cmd) if w == "-S"]
    target = tmp_path / "params.yaml"
    shutil.copy(committed_params_file(), target)
    dvc_hydra.apply_overrides(target, sets)
    by_dvc = yaml.safe_load(target.read_text())
    ours = preset_params(path.stem)
    assert by_dvc == ours
    validate(by_dvc)
    assert by_dvc != committed_params()


def test_a_preset_key_that_params_yaml_lacks_is_named(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("model:\n  chh: 64\n")
    with pytest.raises(tool.PresetError, match=r"typo.yaml: model.chh is not a params.yaml key; allowed here: .*\bch\b"):
        tool.command(bad, committed_params_file(), None, [])


def test_a_preset_value_the_schema_refuses_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: -1\n")
    with pytest.raises(tool.PresetError, match=r"bad.yaml applied to .*train.lr"):
        tool.command(bad, committed_params_file(), None, [])


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "model: [\n", "7\n"])
def test_a_malformed_preset_exits_2_with_one_line(tmp_path, capsys, text):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert tool.main([str(bad), "--params", str(committed_params_file()), "--print"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("preset: ") and err.count("\n") == 1, err


def test_print_shows_the_command_with_extra_arguments_last(capsys):
    assert tool.main([str(ROOT / "presets/smoke.yaml"), "--params", str(committed_params_file()), "--print", "-n", "s1", "-S", "T=200", "train"]) == 0
    out = capsys.readouterr().out.split()
    assert out[:5] == ["dvc", "exp", "run", "-n", "s1"] and out[-3:] == ["-S", "T=200", "train"]


def test_the_gpu_preset_is_ho_et_al_s_cifar10_network():
    P = validate(preset_params())
    setup = train_setup(P, in_channels=3)
    assert count_params(UNet(setup.model)) == 35_746_307  # DDPM CIFAR-10 (and diffusers' UNet2DModel of the same blocks)
    assert P.data.pypi.id_range == [] and P.train.compile and P.sample.n_samples >= 512


def test_the_training_split_is_whole_batches_so_the_compiled_step_keeps_one_shape():
    P = validate(preset_params())
    train, val = split_indices(N_ARTWORKS, P.prepare.val_fraction, P.seed)
    assert len(train) + len(val) == N_ARTWORKS and len(train) % P.train.batch_size == 0, (len(train), P.train.batch_size)
    assert math.ceil(len(train) / P.train.batch_size) == 7


def test_the_gpu_preset_runs_at_32_px_whatever_the_cpu_default():
    assert validate(preset_params()).prepare.image_size == 32  # attention at 16x16 needs it; the CPU default is 24


def test_the_scripts_run_the_preset_files():
    assert "presets/gpu.yaml" in (ROOT / "scripts/gpu_preset.sh").read_text()
    smoke = (ROOT / "ci/smoke.sh").read_text()
    assert "presets/smoke.yaml" in smoke and " -S model." not in smoke

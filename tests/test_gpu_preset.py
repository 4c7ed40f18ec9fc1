"""The GPU preset (scripts/gpu_preset.sh) is a valid experiment, and its compiled step keeps one shape."""

import math
import re
import shlex

import yaml

from ddpmlab.pipeline.data.prepare import split_indices
from ddpmlab.core.unet import UNet, count_params
from ddpmlab.pipeline.schema import validate
from ddpmlab.pipeline.configs import train_setup

from .conftest import ROOT, committed_params

N_ARTWORKS = 1008  # the pokemon==0.36 sdist, data.pypi.id_range: []


def preset_params() -> dict:
    """params.yaml with the script's -S overrides applied (values parsed as YAML, as dvc does)."""
    words = shlex.split(re.sub(r"\\\n", " ", (ROOT / "scripts/gpu_preset.sh").read_text().split("exec dvc exp run", 1)[1]))
    p = committed_params()
    sets = [words[i + 1] for i, w in enumerate(words) if w == "-S"]
    assert len(sets) >= 15
    for s in sets:
        key, value = s.split("=", 1)
        *parents, leaf = key.split(".")
        node = p
        for k in parents:
            node = node[k]
        assert leaf in node, key  # a typo would add a key the schema then refuses; name it here
        node[leaf] = yaml.safe_load(value)
    return p


def test_the_preset_is_valid_and_is_ho_et_al_s_cifar10_network():
    P = validate(preset_params())
    setup = train_setup(P, in_channels=3)
    assert count_params(UNet(setup.model)) == 35_746_307  # DDPM CIFAR-10 (and diffusers' UNet2DModel of the same blocks)
    assert P.data.pypi.id_range == [] and P.train.compile and P.sample.n_samples >= 512


def test_the_training_split_is_whole_batches_so_the_compiled_step_keeps_one_shape():
    P = validate(preset_params())
    train, val = split_indices(N_ARTWORKS, P.prepare.val_fraction, P.seed)
    assert len(train) + len(val) == N_ARTWORKS and len(train) % P.train.batch_size == 0, (len(train), P.train.batch_size)
    assert math.ceil(len(train) / P.train.batch_size) == 7


def test_the_preset_runs_at_32_px_whatever_the_cpu_default():
    assert validate(preset_params()).prepare.image_size == 32  # attention at 16x16 needs it; the CPU default is 24

"""The package's layers: core <- pipeline <- tools, imports pointing one way, and no figure code in training.

The rules live in `ddpmlab.tools.depgraph.layer_violations` (`python -m ddpmlab.tools.depgraph` prints them);
each is checked here on this checkout and on a copy with a planted wrong-way import, which must be caught.
"""

import shutil

import pytest

from ddpmlab.tools.depgraph import layer_violations

from .conftest import ROOT


def test_this_checkout_has_no_wrong_way_import():
    assert layer_violations(ROOT) == []


@pytest.fixture
def copy(tmp_path):
    for name in ("src", "stages"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return tmp_path


def plant(root, rel, line, at_top=False):
    f = root / rel
    text = f.read_text()
    f.write_text(line + "\n" + text if at_top else text + "\n" + line + "\n")


@pytest.mark.parametrize("rel, line, expected", [
    # the science reaching up to configuration, files or figures
    ("src/ddpmlab/core/schedule.py", "from ddpmlab.pipeline.schema import load_params", "core/schedule.py (core) imports pipeline"),
    ("src/ddpmlab/core/training.py", "def f():\n    from ddpmlab.pipeline import figures", "core/training.py (core) imports pipeline"),
    # the pipeline depending on a command-line tool
    ("src/ddpmlab/pipeline/stages/report.py", "import ddpmlab.tools.compare", "pipeline/stages/report.py (pipeline) imports tools"),
    # a door doing more than opening
    ("stages/sample.py", "from ddpmlab.core.schedule import Schedule", "stages/sample.py should import ddpmlab.pipeline.stages.sample alone"),
    # a figure helper in training's reach: a plot tweak would retrain
    ("src/ddpmlab/core/sampling.py", "import matplotlib", "stages/train.py reaches figure code: ddpmlab/core/sampling.py"),
])
def test_a_planted_wrong_way_import_is_caught(copy, rel, line, expected):
    assert layer_violations(copy) == []
    plant(copy, rel, line)
    found = layer_violations(copy)
    assert any(expected in v for v in found), found


def test_a_top_level_module_importing_a_layer_is_caught(copy):
    (copy / "src/ddpmlab/helpers.py").write_text('"""x"""\nfrom ddpmlab.tools import gate\n')
    assert any("helpers.py (outside the layers) imports tools" in v for v in layer_violations(copy))

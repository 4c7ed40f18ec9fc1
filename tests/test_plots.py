"""`dvc plots show` and `dvc plots diff` work on this pipeline and put each revision's images side by side.

The static tests read dvc.yaml; the slow one runs the real pipeline, on the tiny configuration of
tests/test_pipeline.py, through `dvc repro` and `dvc exp run` in a temporary git+DVC copy. It stops
at the stages that make the compared figures (schedule, sample; prepare and train on the way), so it
needs no Inception weights (no network) and takes one to two minutes; ci/smoke.sh runs `dvc plots diff`
on the whole smoke pair.
"""

import re

import pytest
import yaml

from .conftest import ROOT
from .test_pipeline import make_project, run

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
# DVC 3's built-in templates (dvc_render); anything else ends `dvc plots` in "Template ... not found"
TEMPLATES = {"simple", "linear", "scatter", "smooth", "confusion", "confusion_normalized", "bar_horizontal", "bar_horizontal_sorted"}
# the figures a comparison of two runs needs side by side
IMAGES = ["reports/sample/grid.png", "reports/sample/trajectory.png", "reports/schedule/forward_process.png",
          "reports/residuals/qq.png", "reports/prepare/contact_sheet.png", "reports/residuals/loss.png"]


def _path(entry):
    return next(iter(entry)) if isinstance(entry, dict) else entry


def _plot_defs():
    """(path or id, props) of every plot: the stages' `plots:` entries and the top-level `plots:` section."""
    for s in DVC["stages"].values():
        for e in s.get("plots") or []:
            yield _path(e), (e[_path(e)] or {}) if isinstance(e, dict) else {}
    for e in DVC.get("plots") or []:
        yield _path(e), (e[_path(e)] or {}) if isinstance(e, dict) else {}


def test_plot_templates_exist():
    bad = {p: props["template"] for p, props in _plot_defs() if "template" in props and props["template"] not in TEMPLATES}
    assert not bad, f"unknown DVC templates: {bad}"


def test_images_are_plots_and_outputs_of_exactly_one_kind():
    plotted = {p for p, _ in _plot_defs()}
    assert not [im for im in IMAGES if im not in plotted]
    for name, s in DVC["stages"].items():
        outs = {_path(e) for e in s.get("outs") or []}
        both = outs & {_path(e) for e in s.get("plots") or []}
        assert not both, f"stage {name}: {both} under both outs and plots"
    # a top-level image plot must be some stage's output, so every revision has it in the DVC cache
    outputs = {_path(e) for s in DVC["stages"].values() for kind in ("outs", "plots") for e in s.get(kind) or []}
    top_images = {_path(e) for e in DVC.get("plots") or [] if str(_path(e)).endswith(".png")}
    assert top_images <= outputs, top_images - outputs


def _images_in(html: str) -> set[str]:
    return set(re.findall(r'<img src="static/([^"]+)"', html))


@pytest.mark.slow
def test_plots_show_and_diff_through_dvc(tmp_path):
    d = tmp_path / "proj"
    d.mkdir()
    env = make_project(d, tmp_path / "imgs")
    run(["dvc", "repro", "schedule", "sample"], d, env)
    run(["git", "add", "-A"], d, env)
    run(["git", "commit", "-qm", "tiny run"], d, env)
    # another sampler: only `sample` reruns, its grid changes, the other figures are carried over
    run(["dvc", "exp", "run", "-n", "steps3", "-S", "sample.steps=3", "schedule", "sample"], d, env)
    made = [im for im in IMAGES if (d / im).is_file()]
    assert made == [im for im in IMAGES if "/residuals/" not in im]  # residuals was not run

    run(["dvc", "plots", "show", "-o", "show"], d, env)  # exit 0 although some plots (sweep, residuals) are absent
    shown = _images_in((d / "show/index.html").read_text())
    for im in made:
        assert f"workspace_{im.replace('/', '_')}" in shown, (im, shown)

    run(["dvc", "plots", "diff", "HEAD", "steps3", "-o", "diff"], d, env)
    html = (d / "diff/index.html").read_text()
    got = _images_in(html)
    for im in made:
        for rev in ("HEAD", "steps3"):
            name = f"{rev}_{im.replace('/', '_')}"
            assert name in got, (name, sorted(got))
            assert (d / "diff/static" / name).read_bytes()[:4] == b"\x89PNG"
    # each revision's own picture: the denoising trajectories differ (5 vs 3 DDIM steps; the final grids
    # of a 2-epoch model are saturated noise and may coincide)
    a, b = ((d / "diff/static" / f"{rev}_reports_sample_trajectory.png").read_bytes() for rev in ("HEAD", "steps3"))
    assert a != b
    assert html.index("HEAD_reports_sample_grid.png") < html.index("steps3_reports_sample_grid.png")
    # the data plots render too: dvclive's loss curves, as vega specs
    assert "train loss per epoch" in html

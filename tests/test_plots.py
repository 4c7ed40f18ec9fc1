"""`dvc plots show` and `dvc plots diff` work on this pipeline and put each revision's images side by side.

The static tests read dvc.yaml; the slow one runs the real pipeline, on the tiny configuration of
tests/test_pipeline.py, through `dvc repro` and `dvc exp run` in a temporary git+DVC copy. It stops
at the stages that make the compared figures (schedule, sample; prepare and train on the way), so it
needs no Inception weights (no network) and takes one to two minutes; ci/smoke.sh runs `dvc plots diff`
on the whole smoke pair.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

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
    assert "training loss per epoch" in html


def _charts():
    """(name, [(data file, field or None for all)], props) of every data chart: the stages' csv/tsv plots and the
    top-level definitions."""
    for s in DVC["stages"].values():
        for e in s.get("plots") or []:
            p, props = _path(e), (e[_path(e)] or {}) if isinstance(e, dict) else {}
            if not p.endswith((".png", ".gif")):
                yield p, [(p, props.get("y"))], props
    for e in DVC.get("plots") or []:
        p, props = _path(e), (e[_path(e)] or {}) if isinstance(e, dict) else {}
        if p.endswith((".png", ".gif")):
            continue
        y = props.get("y")
        pairs = [(f, field) for f, fields in y.items() for field in (fields if isinstance(fields, list) else [fields])] if isinstance(y, dict) else [(p, y)]
        yield p, pairs, props


def test_no_series_is_charted_twice_and_every_axis_says_what_it_is():
    seen, dup = {}, []
    for name, pairs, props in _charts():
        for f, field in pairs:
            for g, other in seen:
                same_file = f == g or f.startswith(g.rstrip("/") + "/") or g.startswith(f.rstrip("/") + "/")
                if same_file and (field is None or other is None or field == other):
                    dup.append((f, field, seen[(g, other)], name))
            seen[(f, field)] = name
        assert props.get("x_label") and props.get("y_label"), f"{name}: give x_label and y_label (DVC would print the field name, or 'y')"
        assert props["x_label"] != "step", f"{name}: dvclive's step is the epoch; say so"
    assert dup == [], dup


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _render(html: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium with every network request refused."""
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                        "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND",
                        "--virtual-time-budget=20000", "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
def test_plots_diff_renders_every_chart_offline_in_chromium(tmp_path):
    """`dvc plots diff` with the project's template draws every chart with no network (vega's canvas or svg marks in
    each chart's div), the sample grid and training images first; DVC's own CDN page draws none."""
    template = ROOT / ".dvc" / "plots" / "offline.html"
    assert template.is_file(), "no .dvc/plots/offline.html: run python scripts/offline_plots.py (scripts/env.sh does)"
    d = tmp_path / "proj"
    d.mkdir()
    env = make_project(d, tmp_path / "imgs")
    (d / ".dvc" / "plots").mkdir()
    shutil.copy(template, d / ".dvc" / "plots" / "offline.html")
    shutil.copy(ROOT / ".dvc" / "config", d / ".dvc" / "config")
    run(["dvc", "repro", "residuals", "sample", "prepare"], d, env)
    run(["git", "add", "-A"], d, env)
    run(["git", "commit", "-qm", "tiny run"], d, env)
    run(["dvc", "exp", "run", "-n", "steps3", "-S", "sample.steps=3", "residuals", "sample"], d, env)
    run(["dvc", "plots", "diff", "HEAD", "steps3", "-o", "diff"], d, env)
    page = (d / "diff" / "index.html").read_text()
    assert "ddpmlab offline plots" in page and not re.search(r"<script[^>]*\bsrc=", page)  # every script inline
    charts = re.findall(r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*var spec', page)
    assert len(charts) >= 4, charts  # loss by t, the validation and training loss, the residual check over training
    dom = _render(d / "diff" / "index.html")
    for chart in charts:
        block = dom.split(f'id="{chart}"', 1)[1][:3000]
        assert re.search(r'<(canvas|svg)[^>]*class="marks"', block), f"chart {chart} did not draw:\n{block[:500]}"
    titles = [t.strip() for t in re.findall(r"<div[^>]*>\s*<p>([^<]+)</p>", dom)]
    images = [t for t in titles if t.endswith((".png", ".gif"))]
    assert images[:2] == ["reports/sample/grid.png", "reports/prepare/contact_sheet.png"], images
    # the control: DVC's own page (its {scripts} are the CDN's) draws nothing here
    from dvc_render.html import PAGE_HTML

    (d / "cdn.html").write_text(PAGE_HTML)
    run(["dvc", "plots", "diff", "HEAD", "steps3", "-o", "cdn", "--html-template", str(d / "cdn.html")], d, env)
    cdn = _render(d / "cdn" / "index.html")
    assert re.search(r'<script src="https://cdn.jsdelivr.net/npm/vega@', (d / "cdn" / "index.html").read_text())
    assert not re.search(r'<(canvas|svg)[^>]*class="marks"', cdn)

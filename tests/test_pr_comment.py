"""The pull request comment: the PR's smoke experiment against main's committed baseline, headline metrics with
direction and delta, both grids as the images CML uploads, a missing grid shown as missing."""

import io
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from ddpmlab.tools import pr_comment
from ddpmlab.tools.compare import Exp

from .conftest import ROOT, committed_params_file


def png(colour) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


BASE = {"kid": 0.2, "val_loss": 0.16, "residuals:chi2_ks": 0.02}
PR = Exp("smoke-base", "abc1234", metrics={"kid": 0.25, "val_loss": 0.12, "recall": 0.5, "resid_ok": False, "residuals:chi2_ks": 0.02})


def referenced(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def test_the_comment_names_direction_and_delta_and_references_exactly_the_images_it_writes(tmp_path):
    md, images = pr_comment.build(PR, png(10), BASE, png(200), "origin/main", tmp_path, gated={"residuals:chi2_ks": "lower"})
    assert "| kid | lower | 0.2 | 0.25 | +0.05 (+25.0%) **worse** |" in md
    assert "| val_loss | lower | 0.16 | 0.12 | -0.04 (-25.0%) better |" in md
    assert "| recall | higher | missing | 0.5 |  |" in md  # main's baseline does not hold recall: shown, not dropped
    assert "| resid_ok | higher | missing | no |  |" in md
    assert "| residuals:chi2_ks | lower | 0.02 | 0.02 | +0 (+0.0%) same |" in md
    assert images == [tmp_path / "main_grid.png", tmp_path / "pr_grid.png"]
    assert referenced(md) == ["main_grid.png", "pr_grid.png"]  # CML uploads what the markdown references
    assert (tmp_path / "main_grid.png").read_bytes() == png(200) and (tmp_path / "comment.md").read_text() == md


def test_a_missing_grid_is_shown_as_missing(tmp_path):
    md, images = pr_comment.build(PR, png(10), BASE, None, "origin/main", tmp_path)
    assert "*missing: main (origin/main) has no sample grid*" in md
    assert images == [tmp_path / "pr_grid.png"] and referenced(md) == ["pr_grid.png"]


def git(d, *args):
    subprocess.run(["git", *args], cwd=d, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


def test_main_side_comes_from_main_s_commit_not_the_working_tree(tmp_path, monkeypatch, capsys):
    """The command reads main's baseline and grid with git at --baseline-rev (a PR may have changed its own copies)."""
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci/smoke_baseline.json").write_text('{"kid": 0.2, "residuals:chi2_ks": 0.02, "val_loss": 0.16}')
    (tmp_path / "ci/smoke_baseline_grid.png").write_bytes(png(200))
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "main's baseline")
    (tmp_path / "ci/smoke_baseline.json").write_text('{"kid": 9, "residuals:chi2_ks": 9, "val_loss": 9}')  # the PR's own edit
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pr_comment, "exp_show", lambda: [PR])
    monkeypatch.setattr(pr_comment, "add_diagnostics", lambda exps, dvc: exps)
    monkeypatch.setattr(pr_comment, "_read", lambda path, rev, mode="r": png(10) if rev == PR.rev and path.endswith("grid.png") else None)
    args = ["smoke-base", "--params", str(committed_params_file()), "--baseline-rev", "main", "--dvc-yaml", str(ROOT / "dvc.yaml"), "--out", "pr"]
    assert pr_comment.main(args) == 0
    md = (tmp_path / "pr/comment.md").read_text()
    assert "| kid | lower | 0.2 | 0.25 |" in md
    assert (tmp_path / "pr/main_grid.png").read_bytes() == png(200) and (tmp_path / "pr/pr_grid.png").read_bytes() == png(10)
    assert capsys.readouterr().out.rstrip().endswith("images: pr/main_grid.png pr/pr_grid.png")
    with pytest.raises(SystemExit) as e:
        pr_comment.main([*args[:4], "no-such-branch", *args[5:]])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-branch:ci/smoke_baseline.json not found" in err


def test_the_workflow_builds_the_comment_and_posts_it_with_cml():
    import yaml

    wf = yaml.safe_load((ROOT / ".github/workflows/compare.yml").read_text())
    runs = "\n".join(step.get("run", "") for step in wf["jobs"]["compare"]["steps"])
    uses = [step.get("uses", "") for step in wf["jobs"]["compare"]["steps"]]
    assert "ddpmlab pr-comment smoke-base --baseline-rev \"origin/" in runs and "cml comment create comment.md" in runs
    assert any(u.startswith("iterative/setup-cml@") for u in uses)

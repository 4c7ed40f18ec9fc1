"""Own images are a DVC input: through dvc, adding, removing or editing an image of a folder source, renaming the
folder, or a folder on another file system makes `dvc status` report the download stage, and `dvc repro`
reruns it and what follows; the note in the default folder is not one of its images."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from .conftest import blob_images, committed_params
from .test_presets import dvc_project

pytestmark = pytest.mark.slow


def dvc(args: list[str], d: Path, env: dict) -> str:
    r = subprocess.run(["dvc", *args], cwd=d, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"dvc {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def repro(d: Path, env: dict) -> set[str]:
    """`dvc repro prepare`; the stages that ran."""
    out = dvc(["repro", "prepare"], d, env)
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def up_to_date(d: Path, env: dict) -> bool:
    return "Data and pipelines are up to date" in dvc(["status", "--with-deps", "prepare"], d, env)


def manifest(d: Path) -> dict:
    return json.loads((d / "data/raw/manifest.json").read_text())


def use_folder(d: Path, folder: str) -> None:
    p = committed_params()
    p["data"].update(source="folder", folder=folder)
    p["prepare"].update(val_fraction=0.25)
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def save_images(folder: Path, n: int, seed: int, first: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(blob_images(n, size=24, seed=seed)):
        im.save(folder / f"{first + i:02d}.png")


@pytest.fixture
def project(tmp_path):
    d = tmp_path / "proj"
    d.mkdir()
    return d, dvc_project(d, cache=tmp_path / "cache")


def test_the_default_folder_add_edit_remove(project):
    d, env = project
    own = d / "data/own"
    assert (own / "README.md").is_file()  # the committed note: the folder exists in a fresh clone
    save_images(own, 8, seed=1)
    use_folder(d, "data/own")
    assert repro(d, env) == {"download", "prepare"}
    assert manifest(d)["count"] == 8 and up_to_date(d, env)
    lock = yaml.safe_load((d / "dvc.lock").read_text())["stages"]["download"]["deps"]
    assert next(x for x in lock if x["path"] == "data/own")["nfiles"] == 8  # the images, not the note

    (own / "README.md").write_text("my notes\n")  # not an image, and .dvcignore keeps it out of the folder's hash
    assert up_to_date(d, env)

    save_images(own, 1, seed=2, first=8)  # add
    assert not up_to_date(d, env) and "data/own" in dvc(["status", "download"], d, env)
    assert repro(d, env) == {"download", "prepare"}
    assert manifest(d)["count"] == 9 and up_to_date(d, env)

    before = manifest(d)["files"]
    blob_images(1, size=24, seed=3)[0].save(own / "00.png")  # edit
    assert not up_to_date(d, env)
    assert repro(d, env) == {"download", "prepare"}
    after = manifest(d)["files"]
    assert after.keys() == before.keys() and [k for k in after if after[k] != before[k]] == ["00.png"]

    (own / "03.png").unlink()  # remove
    assert not up_to_date(d, env)
    assert repro(d, env) == {"download", "prepare"}
    assert manifest(d)["count"] == 8 and "03.png" not in manifest(d)["files"]


@pytest.fixture
def other_fs(tmp_path):
    """A folder on another file system than the project's (/dev/shm, a tmpfs, when it is one), else outside it."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev else tmp_path
    folder = Path(tempfile.mkdtemp(prefix="ddpmlab-own-", dir=base))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_folder_elsewhere_then_renamed(project, other_fs):
    d, env = project
    first = other_fs / "photos"
    save_images(first, 8, seed=4)
    use_folder(d, str(first))
    assert repro(d, env) == {"download", "prepare"}
    assert up_to_date(d, env) and manifest(d)["folder"] == str(first)

    save_images(first, 1, seed=5, first=8)
    assert str(first) in dvc(["status", "download"], d, env)
    assert repro(d, env) == {"download", "prepare"}
    assert manifest(d)["count"] == 9

    renamed = other_fs / "photos-renamed"
    first.rename(renamed)
    assert str(first) in dvc(["status", "download"], d, env)  # the dependency is gone: reported, nothing silently reused
    use_folder(d, str(renamed))
    assert not up_to_date(d, env)
    ran = repro(d, env)
    assert "download" in ran and manifest(d)["folder"] == str(renamed) and manifest(d)["count"] == 9
    assert up_to_date(d, env)


def test_versioned_with_dvc_add(project):
    """`git rm -r --cached data/own && dvc add data/own` versions the images (the recipe in docs/pipeline.md): data/own.dvc is not
    git-ignored, and the dependency still works."""
    d, env = project
    save_images(d / "data/own", 8, seed=6)
    use_folder(d, "data/own")
    r = subprocess.run(["git", "rm", "-rq", "--cached", "data/own"], cwd=d, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dvc(["add", "data/own"], d, env)
    r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=d, env=env, capture_output=True, text=True)
    assert "data/own.dvc" in r.stdout and "data/own/00.png" not in r.stdout, r.stdout
    assert repro(d, env) == {"download", "prepare"} and manifest(d)["count"] == 8
    save_images(d / "data/own", 1, seed=7, first=8)
    assert not up_to_date(d, env)
    assert repro(d, env) == {"download", "prepare"} and manifest(d)["count"] == 9


def test_readme_one_liners_for_own_images_and_the_gpu_preset(tmp_path):
    """README's first screen: `bash scripts/pipeline.sh -S data.source=folder -S data.folder=DIR` runs an experiment
    on one's own images (here up to prepare); `bash scripts/gpu_preset.sh` on a machine without a GPU stops at its
    device check with one line, before dvc starts."""
    from .conftest import ROOT

    d = tmp_path / "proj"
    d.mkdir()
    env = dvc_project(d, cache=tmp_path / "cache")
    for name in ("scripts", "presets", "requirements.lock", "pyproject.toml"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, d / name)
    (d / ".venv").symlink_to(ROOT / ".venv")  # the pinned environment scripts/env.sh made (same lock: no reinstall)
    subprocess.run(["git", "add", "-A"], cwd=d, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "scripts"], cwd=d, env=env, check=True)
    mine = tmp_path / "my images"
    save_images(mine, 8, seed=4)
    r = subprocess.run(["bash", "scripts/pipeline.sh", "-S", "data.source=folder", "-S", f"data.folder={mine}", "-S", "prepare.val_fraction=0.25",
                        "prepare"], cwd=d, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert manifest(d)["count"] == 8
    shown = json.loads(dvc(["exp", "show", "--json"], d, env))
    assert any(e.get("data", {}).get("params", {}).get("params.yaml", {}).get("data", {}).get("data", {}).get("folder") == str(mine)
               for rev in shown for e in [x for exp in (rev.get("experiments") or []) for x in exp.get("revs", [])]), "no experiment with the folder"
    g = subprocess.run(["bash", "scripts/gpu_preset.sh"], cwd=d, env=env, capture_output=True, text=True)
    assert g.returncode == 2, g.stdout[-2000:] + g.stderr[-2000:]
    lines = [ln for ln in g.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "CUDA" in lines[0], g.stderr


def test_outputs_moving_from_the_dvc_cache_to_git_lose_nothing(tmp_path):
    """A figure that was a cached output becomes a non-cached one (in git), as the report's figures did: the user's
    copy in the workspace stays, the run is not redone, and the earlier revision's file is still restored from the cache."""
    d = tmp_path / "proj"
    d.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1")
    stage = "stages:\n  fig:\n    cmd: python -c \"open('fig.png', 'w').write(open('n.txt').read())\"\n    deps: [n.txt]\n    outs:\n      - fig.png{}\n"
    (d / "n.txt").write_text("first run\n")
    (d / "dvc.yaml").write_text(stage.format(""))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)
    dvc(["repro"], d, env)
    subprocess.run(["git", "add", "-A"], cwd=d, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "cached figure"], cwd=d, env=env, check=True)
    (d / "dvc.yaml").write_text(stage.format(":\n          cache: false"))
    (d / ".gitignore").write_text("")  # DVC's entry for the cached output goes: git now tracks the file
    assert "Running stage" not in dvc(["repro"], d, env)
    assert (d / "fig.png").read_text() == "first run\n"
    subprocess.run(["git", "add", "-A"], cwd=d, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "figure in git"], cwd=d, env=env, check=True)
    assert subprocess.run(["git", "ls-files", "fig.png"], cwd=d, capture_output=True, text=True).stdout.strip() == "fig.png"
    (d / "n.txt").write_text("second run\n")
    dvc(["repro"], d, env)
    subprocess.run(["git", "commit", "-qam", "second run"], cwd=d, env=env, check=True)
    subprocess.run(["git", "checkout", "-q", "HEAD~2"], cwd=d, env=env, check=True)
    dvc(["checkout", "--force"], d, env)
    assert (d / "fig.png").read_text() == "first run\n"

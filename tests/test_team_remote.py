"""A team's shared experiments against a real server: two clones (two machines) run different experiments and
`dvc exp push` them to a shared bare git repository and a WebDAV DVC remote (dvc-webdav) served by WsgiDAV on
127.0.0.1 with a throwaway user and password; a third clone `dvc exp pull`s both, restores one's model from the
server, and `ddpmlab compare`s them with their grids."""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .test_pipeline import ROOT, make_project, run

pytestmark = pytest.mark.slow
pytest.importorskip("dvc_webdav", reason="dvc-webdav is a pinned test dependency (requirements.lock)")
pytest.importorskip("wsgidav", reason="wsgidav is a pinned test dependency (requirements.lock)")

USER, PASSWORD = "alice", "throwaway-" + os.urandom(6).hex()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webdav(tmp_path):
    """WsgiDAV serving a fresh folder on a free port of 127.0.0.1, basic auth with one user; stopped afterwards."""
    root, port = tmp_path / "dav", free_port()
    (root / "dvc").mkdir(parents=True)
    config = {"host": "127.0.0.1", "port": port, "provider_mapping": {"/": str(root)}, "verbose": 1,
              "http_authenticator": {"domain_controller": None, "accept_basic": True, "accept_digest": False, "default_to_digest": False},
              "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}}}
    (tmp_path / "wsgidav.yaml").write_text(yaml.safe_dump(config))
    wsgidav = shutil.which("wsgidav", path=str(Path(sys.executable).parent))
    log = open(tmp_path / "wsgidav.log", "w")
    server = subprocess.Popen([wsgidav, "--config", str(tmp_path / "wsgidav.yaml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"wsgidav did not start: {(tmp_path / 'wsgidav.log').read_text()[-2000:]}")
        yield f"webdav://127.0.0.1:{port}/dvc", root / "dvc"
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def join(clone: Path, url: str, env: dict) -> None:
    """What each team member does once in their clone: the shared remote's credentials, kept out of git (--local)."""
    run(["dvc", "remote", "modify", "--local", "team", "user", USER], clone, env)
    run(["dvc", "remote", "modify", "--local", "team", "password", PASSWORD], clone, env)


def test_two_machines_share_experiments_through_a_webdav_remote(tmp_path, webdav):
    url, served = webdav
    origin = tmp_path / "origin"
    origin.mkdir()
    env = make_project(origin, tmp_path / "imgs")
    run(["dvc", "remote", "add", "-d", "team", url], origin, env)  # committed: the team's remote, without credentials
    run(["git", "add", "-A"], origin, env)
    run(["git", "commit", "-qm", "team remote"], origin, env)
    shared = tmp_path / "shared.git"
    run(["git", "clone", "-q", "--bare", str(origin), str(shared)], tmp_path, env)

    for name, steps in (("alice-steps3", 3), ("bob-steps4", 4)):  # two machines, each its own clone and experiment
        clone = tmp_path / name
        run(["git", "clone", "-q", str(shared), str(clone)], tmp_path, env)
        join(clone, url, env)
        run(["dvc", "exp", "run", "-n", name, "-S", f"sample.steps={steps}", "sample"], clone, env)
        run(["dvc", "exp", "push", "origin", name], clone, env)
    assert any(served.rglob("*")), "nothing reached the WebDAV server"

    third = tmp_path / "reviewer"
    run(["git", "clone", "-q", str(shared), str(third)], tmp_path, env)
    join(third, url, env)
    for name in ("alice-steps3", "bob-steps4"):
        run(["dvc", "exp", "pull", "origin", name], third, env)
    listed = run(["dvc", "exp", "list", "--name-only"], third, env).split()
    assert {"alice-steps3", "bob-steps4"} <= set(listed), listed
    # a cached output (bob's model) read at his experiment: from the pulled cache, then, with the cache gone, from the server
    want = hashlib.sha256((tmp_path / "bob-steps4" / "models/model.pt").read_bytes()).hexdigest()
    read = [sys.executable, "-c", "import dvc.api, hashlib; print(hashlib.sha256(dvc.api.read('models/model.pt', rev='bob-steps4', mode='rb')).hexdigest())"]
    assert run(read, third, env).strip() == want
    shutil.rmtree(third / ".dvc" / "cache")
    assert run(read, third, env).strip() == want

    cmp = subprocess.run([str(Path(sys.executable).parent / "ddpmlab"), "compare", "alice-steps3", "bob-steps4", "--out", "cmp"], cwd=third,
                         env={**env, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stderr[-3000:]
    md = (third / "cmp" / "compare.md").read_text()
    assert "| sample.steps | 3 | 4 |" in md, md
    assert "sample_grids.png" in md and (third / "cmp" / "sample_grids.png").is_file()
    assert "missing" not in md.lower(), md

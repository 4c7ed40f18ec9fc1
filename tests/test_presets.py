"""Dataset presets: tiny copies of each official format (CIFAR-10 python pickles in a tar.gz, IDX gzip
files, a Flowers-102-style tgz with its .mat label files), parsed directly and through `dvc repro`
from a loopback HTTP server; corrupted and crafted copies are refused."""

import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ddpmlab.pipeline.data import presets as P
from ddpmlab.core.errors import DataError

from .conftest import committed_params, committed_params_text

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Builders of the official formats, tiny


class Py2Pickler(pickle._Pickler):
    """Writes bytes with Python 2's str opcodes (SHORT_BINSTRING / BINSTRING), as the cPickle that
    wrote the official CIFAR-10 batches did; read back with encoding='latin1' they become str."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        self.write((b"U" + bytes([n]) if n < 256 else b"T" + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle(obj) -> bytes:
    f = io.BytesIO()
    Py2Pickler(f, protocol=2).dump(obj)
    # the official files name numpy's helper by its Python 2 era module
    return f.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_images(n: int, seed: int) -> np.ndarray:
    """uint8 [n, 32, 32, 3]: a different flat colour per image plus noise, so order and layout are checkable."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def cifar_batch(images: np.ndarray, labels: list[int], name: str) -> bytes:
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # the R, G, B planes one after another
    return py2_pickle({b"batch_label": name.encode(), b"labels": list(labels), b"data": rows, b"filenames": [b"f%d.png" % i for i in range(len(images))]})


def add_member(t: tarfile.TarFile, name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    t.addfile(info, io.BytesIO(data))


def make_cifar(folder: Path) -> dict:
    """cifar-10-python.tar.gz with two training batches, a test batch and batches.meta."""
    x1, x2, xt = cifar_images(6, 1), cifar_images(4, 2), cifar_images(5, 3)
    y1, y2, yt = [3, 0, 3, 5, 9, 1], [3, 3, 2, 0], [1, 3, 4, 5, 6]
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as t:
        add_member(t, "cifar-10-batches-py/batches.meta", py2_pickle({b"label_names": [c.encode() for c in P.CIFAR10_CLASSES]}))
        add_member(t, "cifar-10-batches-py/data_batch_2", cifar_batch(x2, y2, "training batch 2 of 2"))  # out of order on purpose
        add_member(t, "cifar-10-batches-py/data_batch_1", cifar_batch(x1, y1, "training batch 1 of 2"))
        add_member(t, "cifar-10-batches-py/test_batch", cifar_batch(xt, yt, "testing batch 1 of 1"))
        add_member(t, "cifar-10-batches-py/readme.html", b"<html></html>")
    return {"train": (np.concatenate([x1, x2]), np.array(y1 + y2)), "test": (xt, np.array(yt))}


def idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def make_idx(folder: Path, seed: int = 0) -> dict:
    """The four (Fashion-)MNIST IDX .gz files: 12 training and 5 test images of 28x28."""
    rng = np.random.default_rng(seed)
    out = {}
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 12), ("test", 5)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.array([3, 1, 3, 7, 0, 9, 3, 2, 8, 7, 1, 3][:n], np.uint8)
        img_name, lab_name = P.IDX_FILES[split]
        (folder / img_name).write_bytes(gzip.compress(idx_bytes(x), mtime=0))
        (folder / lab_name).write_bytes(gzip.compress(idx_bytes(y), mtime=0))
        out[split] = (x, y.astype(np.int64))
    return out


FLOWER_LABELS = [77, 77, 3, 51, 3, 102, 1, 77, 3]  # image ids 1..9
FLOWER_SETS = {"trnid": [2, 5, 9], "valid": [1, 3], "tstid": [4, 6, 7, 8]}


def make_flowers(folder: Path) -> None:
    """102flowers.tgz (jpg/image_0000k.jpg, k = 1..9, different sizes), imagelabels.mat, setid.mat."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    with tarfile.open(folder / "102flowers.tgz", "w:gz") as t:
        for k in range(1, len(FLOWER_LABELS) + 1):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (40 + k, 50, 3), dtype=np.uint8)).save(buf, "JPEG")
            add_member(t, f"jpg/image_{k:05d}.jpg", buf.getvalue())
    savemat(folder / "imagelabels.mat", {"labels": np.array([FLOWER_LABELS], np.uint8)})
    savemat(folder / "setid.mat", {k: np.array([v], np.uint16) for k, v in FLOWER_SETS.items()})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pins(folder: Path, preset: str) -> dict:
    return {name: sha(folder / name) for name in P.SPECS[preset].files}


def local_fetch(folder: Path, seen: list | None = None):
    """A fetch(url, sha256) that reads the file name from the URL in `folder` and checks its hash."""

    def fetch(url, sha256):
        path = folder / url.rsplit("/", 1)[1]
        if seen is not None:
            seen.append(path.name)
        if sha(path) != sha256:
            raise DataError(f"checksum mismatch for {url}")
        return path

    return fetch


def run_preset(preset, folder, out, splits=("train",), classes=(), max_images=0, seen=None):
    return P.fetch_preset(preset, f"file://{folder}/", pins(folder, preset), list(splits), list(classes), max_images, out, local_fetch(folder, seen))


# ---------------------------------------------------------------------------------------------
# Parsers


def test_cifar_batches_parse_to_images_in_order(tmp_path):
    truth = make_cifar(tmp_path / "c")
    data = P.read_cifar10(tmp_path / "c/cifar-10-python.tar.gz", ["train", "test"])
    for split in ("train", "test"):
        x, y = data[split]
        assert x.shape == (len(truth[split][0]), 32, 32, 3) and x.dtype == np.uint8
        np.testing.assert_array_equal(x, truth[split][0])  # batches 1 then 2, planes -> HWC
        np.testing.assert_array_equal(y, truth[split][1])


def test_restricted_unpickler_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for payload in (pickle.dumps({"data": Evil(), "labels": [0]}, protocol=2), pickle.dumps(Evil(), protocol=0)):
        with pytest.raises(DataError, match="refusing to load (posix|os).system"):
            P.parse_cifar_batch(payload, "evil")
    assert not marker.exists()
    # an object array would unpickle its elements: refused by the dtype guard, as is any other class
    with pytest.raises(DataError, match="only uint8"):
        P.parse_cifar_batch(py2_pickle({b"data": np.array([1, "x"], dtype=object), b"labels": [0]}), "obj")
    with pytest.raises(DataError, match="refusing to load builtins.eval"):
        P.safe_unpickle(b"cbuiltins\neval\n(S'1+1'\ntR.", "eval")
    with pytest.raises(DataError, match="'data' must be uint8"):
        P.parse_cifar_batch(py2_pickle({b"data": np.zeros((2, 3072), np.int64).astype(np.uint8)[:, :10], b"labels": [0, 1]}), "short")


def test_idx_parser_matches_torchvision_and_refuses_bad_files(tmp_path):
    truth = make_idx(tmp_path)
    x, y = P.read_idx_split(tmp_path / P.IDX_FILES["train"][0], tmp_path / P.IDX_FILES["train"][1])
    np.testing.assert_array_equal(x, truth["train"][0])
    np.testing.assert_array_equal(y, truth["train"][1])
    from torchvision.datasets.mnist import read_image_file, read_label_file  # the peer parser (uncompressed files)

    raw = tmp_path / "raw-images"
    raw.write_bytes(gzip.decompress((tmp_path / P.IDX_FILES["train"][0]).read_bytes()))
    np.testing.assert_array_equal(read_image_file(str(raw)).numpy(), x)
    np.testing.assert_array_equal(P.read_idx(raw, 3), x)  # uncompressed works too
    rawl = tmp_path / "raw-labels"
    rawl.write_bytes(gzip.decompress((tmp_path / P.IDX_FILES["train"][1]).read_bytes()))
    np.testing.assert_array_equal(read_label_file(str(rawl)).numpy(), y)

    good = idx_bytes(truth["train"][0])
    cases = {
        "truncated": (gzip.compress(good[:-5]), "truncated"),
        "trailing": (gzip.compress(good + b"x"), "continues after"),
        "magic": (gzip.compress(b"\0\0\x0d\x03" + good[4:]), "not an IDX file"),
        "huge": (gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**6, 1000, 1000)), "more than this reader accepts"),
        "badgzip": (b"\x1f\x8b\x08\x00garbage", "not a readable IDX file"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=msg):
            P.read_idx(tmp_path / name, 3)


def test_flowers_meta(tmp_path):
    make_flowers(tmp_path)
    labels, ids = P.read_flowers_meta(tmp_path / "imagelabels.mat", tmp_path / "setid.mat")
    assert labels.tolist() == FLOWER_LABELS
    assert {k: v.tolist() for k, v in ids.items()} == {"train": [2, 5, 9], "val": [1, 3], "test": [4, 6, 7, 8]}


# ---------------------------------------------------------------------------------------------
# fetch_preset: selection, names, channels


def test_cifar10_preset_splits_classes_cap(tmp_path):
    truth = make_cifar(tmp_path / "c")
    res = run_preset("cifar10", tmp_path / "c", tmp_path / "o1", splits=["train", "test"])
    assert len(res.paths) == 15 and res.manifest["split_counts"] == {"train": 10, "test": 5}
    first = Image.open(tmp_path / "o1/train_00000_cat.png")
    assert first.mode == "RGB" and np.array_equal(np.asarray(first), truth["train"][0][0])  # lossless
    res = run_preset("cifar10", tmp_path / "c", tmp_path / "o2", splits=["train"], classes=["Cat"])
    assert [p.name for p in res.paths] == ["train_00000_cat.png", "train_00002_cat.png", "train_00006_cat.png", "train_00007_cat.png"]
    res = run_preset("cifar10", tmp_path / "c", tmp_path / "o3", splits=["test", "train"], classes=[3, "airplane"], max_images=3)
    assert [p.name for p in res.paths] == ["test_00001_cat.png", "train_00000_cat.png", "train_00001_airplane.png"]
    assert res.manifest["class_counts"] == {"airplane": 1, "cat": 2}
    with pytest.raises(DataError, match=r"'dragon' is not a class of cifar10; allowed: names airplane, .* or numbers 0..9"):
        run_preset("cifar10", tmp_path / "c", tmp_path / "o4", classes=["dragon"])
    with pytest.raises(DataError, match="not valid for cifar10"):
        run_preset("cifar10", tmp_path / "c", tmp_path / "o5", splits=["val"])


@pytest.mark.parametrize("preset", ["mnist", "fashion_mnist"])
def test_idx_presets_write_one_channel_pngs(tmp_path, preset):
    truth = make_idx(tmp_path / "m")
    seen = []
    res = run_preset(preset, tmp_path / "m", tmp_path / "o", classes=["3"] if preset == "mnist" else ["T-shirt/top", "ankle boot"], seen=seen)
    assert seen == list(P.IDX_FILES["train"])  # only the requested split's files are fetched
    want = [0, 2, 6, 11] if preset == "mnist" else [4, 5]  # label 3; labels 0 (T-shirt/top) and 9 (Ankle boot)
    assert [int(p.name.split("_")[1]) for p in res.paths] == want
    for p, i in zip(res.paths, want):
        im = Image.open(p)
        assert im.mode == "L" and np.array_equal(np.asarray(im), truth["train"][0][i])
    if preset == "fashion_mnist":
        assert [p.name for p in res.paths] == ["train_00004_t_shirt_top.png", "train_00005_ankle_boot.png"]


def test_flowers_preset_keeps_jpeg_bytes_and_official_labels(tmp_path):
    make_flowers(tmp_path / "f")
    res = run_preset("flowers102", tmp_path / "f", tmp_path / "o", splits=["train", "val", "test"], classes=[77, "3"])
    assert [p.name for p in res.paths] == ["train_00002_077.jpg", "train_00005_003.jpg", "train_00009_003.jpg", "val_00001_077.jpg",
                                           "val_00003_003.jpg", "test_00008_077.jpg"]
    with tarfile.open(tmp_path / "f/102flowers.tgz") as t:
        assert res.paths[0].read_bytes() == t.extractfile("jpg/image_00002.jpg").read()
    with pytest.raises(DataError, match="numbers 1..102"):
        run_preset("flowers102", tmp_path / "f", tmp_path / "o2", classes=[0])


def test_unpinned_or_unknown_files_are_refused_before_any_download(tmp_path):
    make_idx(tmp_path / "m")
    called = []
    sha = pins(tmp_path / "m", "mnist")
    sha["t10k-labels-idx1-ubyte.gz"] = ""
    with pytest.raises(DataError, match=r"data.mnist.sha256.t10k-labels-idx1-ubyte.gz is 'not set': pin the official file's sha256"):
        P.fetch_preset("mnist", "https://example.org/", sha, ["train"], [], 0, tmp_path / "o", lambda u, s: called.append(u))
    with pytest.raises(DataError, match="unknown file"):
        P.fetch_preset("mnist", "https://example.org/", {**pins(tmp_path / "m", "mnist"), "x.gz": "0" * 64}, ["train"], [], 0, tmp_path / "o", lambda u, s: called.append(u))
    assert called == []


def test_params_yaml_pins_every_official_file():
    p = committed_params()["data"]
    for preset in P.PRESETS:
        assert P.check_files(preset, p[preset]["url"], p[preset]["sha256"]).keys() == set(P.SPECS[preset].files)
        assert p[preset]["url"].startswith(("https://", "http://")) and p[preset]["url"].endswith("/")


# ---------------------------------------------------------------------------------------------
# Through dvc, from a loopback HTTP server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output readable
        pass


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """Tiny copies of the official files of every preset, served from 127.0.0.1, plus a corrupted MNIST."""
    root = tmp_path_factory.mktemp("mirror")
    make_cifar(root / "cifar10")
    make_idx(root / "mnist", seed=0)
    make_idx(root / "fashion_mnist", seed=1)
    make_flowers(root / "flowers102")
    shutil.copytree(root / "mnist", root / "corrupted")
    f = root / "corrupted" / P.IDX_FILES["train"][0]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    f.write_bytes(bytes(data))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def dvc_project(d: Path, cache: Path | None) -> dict:
    """This project's pipeline (dvc.yaml, stages, src, params.yaml) in a fresh git + DVC repository at d."""
    (d / "params.yaml").write_text(committed_params_text())
    for name in ("dvc.yaml", "stages", "src", ".gitignore", ".dvcignore", "data/own/README.md"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, d / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, d / name)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1")
    if cache is not None:
        env["XDG_CACHE_HOME"] = str(cache)  # downloads of this test only: a cached good copy must not hide a corrupted one
    for cmd in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return env


def preset_params(base: dict, preset: str, url: str, folder: Path, **preset_opts) -> dict:
    p = json.loads(json.dumps(base))
    p["data"]["source"] = preset
    p["data"][preset] = {"url": url, "sha256": pins(folder, preset)}
    p["data"]["preset"].update(preset_opts)
    p["prepare"].update(val_fraction=0.25)
    if preset in ("mnist", "fashion_mnist"):  # the 28 px line of docs/pipeline.md: 28 = 7 * 2**2
        p["prepare"]["image_size"] = 28
        p["model"].update(ch_mult=[1, 2, 2], attn_resolutions=[7])
    return p


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("proj")
    env = dvc_project(d, cache=tmp_path_factory.mktemp("cache"))
    return d, env, yaml.safe_load((d / "params.yaml").read_text())


CASES = {  # preset -> (options, images expected, channels, class names expected)
    "cifar10": ({"splits": ["train", "test"], "classes": [], "max_images": 0}, 15, 3, None),
    "mnist": ({"splits": ["train"], "classes": [3], "max_images": 0}, 4, 1, ["3"]),
    "fashion_mnist": ({"splits": ["test", "train"], "classes": [], "max_images": 9}, 9, 1, None),
    "flowers102": ({"splits": ["train", "val", "test"], "classes": ["77", 3], "max_images": 0}, 6, 3, ["003", "077"]),
}


@pytest.mark.slow  # dvc repro of two stages per preset
@pytest.mark.parametrize("preset", list(CASES))
def test_preset_through_dvc_from_loopback_http(mirror, project, preset):
    root, base_url = mirror
    d, env, base = project
    opts, n, channels, classes = CASES[preset]
    params = preset_params(base, preset, f"{base_url}/{preset}/", root / preset, **opts)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = subprocess.run(["dvc", "repro", "prepare"], cwd=d, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    manifest = json.loads((d / "data/raw/manifest.json").read_text())
    assert manifest["source"] == preset and manifest["count"] == n == len(manifest["files"])
    assert manifest["splits"] == opts["splits"] and manifest["sha256"] == pins(root / preset, preset)
    if classes:
        assert manifest["classes"] == classes
    with np.load(d / "data/prepared/train.npz") as tr, np.load(d / "data/prepared/val.npz") as va:
        size = params["prepare"]["image_size"]
        assert tr["images"].shape[1:] == va["images"].shape[1:] == (size, size, channels)
        assert len(tr["images"]) + len(va["images"]) == n
    stats = json.loads((d / "reports/prepare/stats.json").read_text())
    assert stats["channels"] == channels and stats["skipped"] == 0
    assert Image.open(d / "reports/prepare/contact_sheet.png").mode == ("L" if channels == 1 else "RGB")


def test_corrupted_copy_is_refused_by_its_hash(mirror, project, tmp_path):
    root, base_url = mirror
    d, env, base = project
    env = dict(env, XDG_CACHE_HOME=str(tmp_path / "cache"))  # empty: the good copy cached by another test must not answer
    params = preset_params(base, "mnist", f"{base_url}/corrupted/", root / "mnist", splits=["train"], classes=[], max_images=0)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = subprocess.run(["dvc", "repro", "download"], cwd=d, env=env, capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "checksum mismatch" in out and "train-images-idx3-ubyte.gz" in out and "Traceback" not in out, out[-3000:]
    assert [line for line in out.splitlines() if line.startswith("download: checksum mismatch for")], out[-3000:]  # one line says it all
    assert not list((Path(env["XDG_CACHE_HOME"]) / "ddpmlab/downloads").glob(f"{pins(root / 'corrupted', 'mnist')['train-images-idx3-ubyte.gz']}*"))


def test_a_pickle_calling_the_ndarray_constructor_is_refused():
    """numpy.ndarray(shape, dtype) called by the pickle itself allocates uninitialised memory of any size: a 1 MB
    pickle once asked for 1.7 GiB, a 4-row one gave images of process memory. Only numpy's own pickling (an
    empty array, then its bytes) is admitted, and numpy checks those bytes against the shape."""
    dtype_u1 = b"cnumpy\ndtype\n(Vu1\nI00\nI01\ntR(I3\nV|\nNNNI-1\nI-1\nI0\ntb"
    for shape in (b"(I4\nI3072\nt", b"(I600000\nI3072\nt"):
        payload = b"(dp0\nVdata\ncnumpy\nndarray\n(" + shape + dtype_u1 + b"tRsVlabels\n(lp1\ns."
        with pytest.raises(DataError, match="only numpy's own array pickling"):
            P.parse_cifar_batch(payload, "direct")
    # numpy's own form with fewer bytes than the shape it claims: numpy refuses to set that state
    good = py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    short = good.replace(np.zeros(2 * 3072, np.uint8).tobytes(), np.zeros(3072, np.uint8).tobytes())
    with pytest.raises(DataError):
        P.parse_cifar_batch(short, "short")
    x, y = P.parse_cifar_batch(good, "good")
    assert x.shape == (2, 32, 32, 3) and list(y) == [0, 1]
    with pytest.raises(DataError, match="N <= 10000"):
        P.parse_cifar_batch(py2_pickle({b"data": np.zeros((10001, 3072), np.uint8), b"labels": [0] * 10001}), "big")


@pytest.mark.parametrize("dims", [(0, 28, 28), (3, 0, 28), (3, 28, 5000)])
def test_idx_header_with_a_zero_or_huge_side_is_refused(tmp_path, dims):
    """A zero dimension once reached the PNG writer as a traceback ('cannot write empty image')."""
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in dims)
    (tmp_path / "x.idx").write_bytes(header + bytes(int(np.prod(dims))))
    with pytest.raises(DataError, match=r"header declares sizes .*each must be 1\.\.1024"):
        P.read_idx(tmp_path / "x.idx", 3)


@pytest.mark.parametrize("case", ["empty", "html", "truncated", "fractional"])
def test_malformed_flowers_label_files_are_one_line(tmp_path, case):
    """Files that pass their hash on a user's mirror but are not the label files: DataError, never a traceback;
    labels of 1.7 are refused, not truncated to 1."""
    from scipy.io import savemat

    make_flowers(tmp_path)
    labels = tmp_path / "imagelabels.mat"
    if case == "empty":
        labels.write_bytes(b"")
    elif case == "html":
        labels.write_bytes(b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    elif case == "truncated":
        labels.write_bytes(labels.read_bytes()[:150])
    else:
        savemat(labels, {"labels": np.array([[1.7] + FLOWER_LABELS[1:]], np.float64)})
    with pytest.raises(DataError, match="whole numbers" if case == "fractional" else "not the Flowers 102 label files"):
        P.read_flowers_meta(labels, tmp_path / "setid.mat")

"""Dataset presets: CIFAR-10, MNIST, Fashion-MNIST and Oxford Flowers 102 from their official files.

params `data.source: <preset>` takes the preset's official files (params `data.<preset>`: a base
URL and a pinned sha256 per file), fetches each through the download module's `fetch_url` (the
same cached, checksummed, limited path as `data.source: url`), parses the official format here and
writes one image file per example into the download stage's images folder:

  cifar10        cifar-10-python.tar.gz: pickled batches `data_batch_1..5` (train) and `test_batch`,
                 each {data: uint8 [10000, 3072] (R, G, B planes of 32x32), labels: [10000]};
  mnist,         IDX files (LeCun et al. 1998), gzip-compressed: `{train,t10k}-images-idx3-ubyte.gz`
  fashion_mnist  uint8 [N, 28, 28] and `{train,t10k}-labels-idx1-ubyte.gz` uint8 [N];
  flowers102     102flowers.tgz (jpg/image_00001.jpg ...), imagelabels.mat (labels 1..102 by image
                 id), setid.mat (trnid / valid / tstid: image ids of the train / val / test splits).

Names are `{split}_{index:05d}_{class}.png` (CIFAR-10 RGB, (Fashion-)MNIST one-channel grey PNGs,
which prepare keeps as one channel) and `{split}_{id:05d}_{label:03d}.jpg` for Flowers 102 (the
original JPEG bytes). Options (params `data.preset`): splits, a class filter, a cap on the count
(the first N in the official order, after the filter).

Nothing here opens a file before its sha256 matched. CIFAR-10's batches are Python pickles: they
are read with a restricted unpickler that can build only dicts, lists, strings, numbers and uint8
numpy arrays (no other class or function can be named, so a crafted pickle cannot run code), and
only after the archive's sha256 matched the pinned value.
"""

from __future__ import annotations

import gzip
import io
import pickle
import re
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
from PIL import Image

from ddpmlab.core.errors import DataError
from ddpmlab.pipeline.schema import PRESETS

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
FLOWERS_FILES = ("102flowers.tgz", "imagelabels.mat", "setid.mat")


@dataclass(frozen=True)
class PresetSpec:
    files: tuple[str, ...]  # official file names (keys of params data.<preset>.sha256)
    splits: tuple[str, ...]  # official split names
    classes: tuple[str, ...]  # class names in label order ([] where labels are only numbers)
    first_label: int = 0  # the number of the first class (Flowers 102 numbers them 1..102)
    n_classes: int = 10


SPECS = {
    "cifar10": PresetSpec((CIFAR_ARCHIVE,), ("train", "test"), CIFAR10_CLASSES),
    "mnist": PresetSpec(IDX_FILES["train"] + IDX_FILES["test"], ("train", "test"), MNIST_CLASSES),
    "fashion_mnist": PresetSpec(IDX_FILES["train"] + IDX_FILES["test"], ("train", "test"), FASHION_CLASSES),
    "flowers102": PresetSpec(FLOWERS_FILES, ("train", "val", "test"), (), first_label=1, n_classes=102),
}

# Bounds on what the parsers accept (the official files are far below them): a crafted file that
# passes its pinned hash is still parsed, so sizes come from headers only after they are checked.
MAX_MEMBER_BYTES = 256 << 20  # one CIFAR batch is 31 MB, one flower JPEG under 1 MB
MAX_IDX_BYTES = 1 << 30  # MNIST's train images are 47 MB decompressed
MAX_IMAGES = 10_000_000

Fetch = Callable[[str, str], Path]  # (url, sha256) -> verified local path


@dataclass
class PresetResult:
    paths: list[Path]
    manifest: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Options


def _norm(name: str) -> str:
    """'T-shirt/top' -> 'tshirttop', 'Ankle boot' -> 'ankleboot': class names match loosely."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def class_label(preset: str, value: int | str) -> int:
    """A class given by number or name -> its label number in the official files; DataError if unknown."""
    spec = SPECS[preset]
    lo, hi = spec.first_label, spec.first_label + spec.n_classes - 1
    if isinstance(value, str) and spec.classes:
        by_name = {_norm(c): spec.first_label + i for i, c in enumerate(spec.classes)}
        if _norm(value) in by_name:
            return by_name[_norm(value)]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
        return value
    names = f"names {', '.join(spec.classes)} or " if spec.classes else ""
    raise DataError(f"data.preset.classes: {value!r} is not a class of {preset}; allowed: {names}numbers {lo}..{hi}")


def class_name(preset: str, label: int) -> str:
    """Label number -> a file-name-safe class name ('ankle_boot', 'cat', '3', '077')."""
    spec = SPECS[preset]
    if not spec.classes:
        return f"{label:03d}"
    return re.sub(r"[^a-z0-9]+", "_", spec.classes[label - spec.first_label].lower()).strip("_")


def check_options(preset: str, splits: Iterable[str], classes: Iterable[int | str], max_images: int) -> tuple[list[str], set[int] | None]:
    """Validated (splits in the given order without repeats, label numbers to keep or None for all)."""
    spec = SPECS[preset]
    splits = list(dict.fromkeys(splits))
    bad = [s for s in splits if s not in spec.splits]
    if bad or not splits:
        raise DataError(f"data.preset.splits: {bad or splits} is not valid for {preset}; allowed: a non-empty list of {', '.join(spec.splits)}")
    if not isinstance(max_images, int) or max_images < 0:
        raise DataError(f"data.preset.max_images: {max_images!r} is not valid; allowed: an integer >= 0 (0 = all)")
    keep = {class_label(preset, c) for c in classes} if classes else None
    return splits, keep


def check_files(preset: str, url: str, sha256: Mapping[str, str]) -> dict[str, str]:
    """The pinned sha256 per official file; one clear line if a file is missing or not pinned."""
    if not isinstance(url, str) or not re.match(r"^(https?|file)://\S+$", url):
        raise DataError(f"data.{preset}.url: {url!r} is not valid; allowed: the http(s):// or file:// folder that holds the official files")
    spec = SPECS[preset]
    unknown = sorted(set(sha256) - set(spec.files))
    if unknown:
        raise DataError(f"data.{preset}.sha256: unknown file(s) {', '.join(unknown)}; the official files are {', '.join(spec.files)}")
    out = {}
    for name in spec.files:
        value = str(sha256.get(name) or "").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise DataError(
                f"data.{preset}.sha256.{name} is {value or 'not set'!r}: pin the official file's sha256 (64 hex digits) in params.yaml; "
                "nothing is downloaded without it"
            )
        out[name] = value
    return out


def _file_url(base: str, name: str) -> str:
    return base + name if base.endswith("/") else f"{base}/{name}"


# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)


MAX_IDX_SIDE = 1024  # an image side in an IDX file (MNIST's are 28)


def read_idx(path: Path | str, ndim: int) -> np.ndarray:
    """An IDX file, gzip-compressed or not -> uint8 array of its `ndim` dimensions.

    Format (LeCun et al.): 4 magic bytes [0, 0, 0x08 (unsigned byte data), ndim], then ndim
    big-endian uint32 sizes, then prod(sizes) bytes in row-major order, nothing after them.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            magic = f.read(4)
            if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] != 0x08 or magic[3] != ndim:
                raise DataError(f"{path.name}: not an IDX file of uint8 with {ndim} dimensions (magic {magic.hex() or 'empty'})")
            dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
            if 0 in dims or any(d > MAX_IDX_SIDE for d in dims[1:]):
                raise DataError(f"{path.name}: header declares sizes {dims}; each must be 1..{MAX_IDX_SIDE} (the count at least 1)")
            n = int(np.prod(dims, dtype=np.int64))
            if n > MAX_IDX_BYTES or dims[0] > MAX_IMAGES:
                raise DataError(f"{path.name}: header declares {dims}, more than this reader accepts ({MAX_IDX_BYTES} bytes)")
            data = f.read(n)
            if len(data) != n:
                raise DataError(f"{path.name}: truncated: header declares {dims} = {n} bytes, found {len(data)}")
            if f.read(1):
                raise DataError(f"{path.name}: data continues after the {n} bytes its header declares")
    except (OSError, EOFError, zlib.error, struct.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path.name}: not a readable IDX file ({type(e).__name__}: {e})") from None
    return np.frombuffer(data, np.uint8).reshape(dims)


def read_idx_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, H, W] images, int64 [N] labels) of one split, checked to belong together."""
    x, y = read_idx(images_path, 3), read_idx(labels_path, 1)
    if len(x) != len(y):
        raise DataError(f"{images_path.name} holds {len(x)} images but {labels_path.name} {len(y)} labels")
    if y.size and y.max() > 9:
        raise DataError(f"{labels_path.name}: labels must be 0..9, found {int(y.max())}")
    return x, y.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (python version)


CIFAR_BATCH = 10_000  # images in one official batch


def _ndarray_reconstruct():
    # numpy's array-unpickling helper, whatever module numpy keeps it in (numpy.core or numpy._core)
    return np.ndarray.__reduce__(np.zeros(1, np.uint8))[0]


class _NdarrayName:
    """What the pickle's `numpy.ndarray` name resolves to: a token that _reconstruct accepts and nothing can call.
    (Called directly, numpy.ndarray(shape, dtype) would allocate uninitialised memory of any size.)"""

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError("numpy.ndarray called by the file: only numpy's own array pickling (an empty array, then its bytes) is allowed")


_NDARRAY = _NdarrayName()


def _only_ndarray(subtype, shape, typecode):
    # numpy pickles an array as _reconstruct(ndarray, (0,), 'b') and then sets its state (shape, dtype and the
    # raw bytes, which numpy checks against the shape): only that empty start is allowed, so every array is
    # built from bytes present in the file
    if subtype is not _NDARRAY or tuple(shape) != (0,):
        raise pickle.UnpicklingError("only numpy's own array pickling (an empty array, then its bytes) is allowed")
    return _ndarray_reconstruct()(np.ndarray, (0,), typecode)


def _only_uint8(obj, align=False, copy=True):
    # always a private copy: the pickle's BUILD step then sets the state of this copy, never of
    # numpy's shared uint8 descriptor
    dt = np.dtype(obj, align=False, copy=True)
    if dt != np.uint8:
        raise pickle.UnpicklingError(f"only uint8 arrays may be built, not {dt}")
    return dt


class SafeUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, strings, numbers and uint8 numpy arrays; nothing else.

    A pickle runs code by naming a callable (a GLOBAL opcode) and calling it (REDUCE). This
    unpickler resolves exactly three names, numpy's ndarray (as a token that cannot be called), its
    array-reconstruction helper and dtype, the latter two wrapped so that they build only plain uint8 arrays
    from bytes present in the file (object arrays, which would unpickle their elements, cannot be made; nor
    can an array allocated by shape alone). Every other name is refused, so no other class or function can be
    reached (the pattern of the Python docs' 'Restricting Globals').
    """

    def find_class(self, module, name):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            return _only_ndarray
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if (module, name) == ("numpy", "dtype"):
            return _only_uint8
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids in a data file")


def safe_unpickle(data: bytes, what: str):
    """Load a (Python 2 or 3) pickle of plain data with `SafeUnpickler`; DataError if it is anything else."""
    try:
        # latin1: the official batches were pickled by Python 2 (byte strings, as numpy and torchvision read them)
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # a malformed pickle can raise almost anything; all of it means "not this format"
        raise DataError(f"{what}: not a CIFAR-10 batch of plain data ({type(e).__name__}: {e})") from None


def _key(d: dict, key: str):
    """d[key] where the pickle may have str or bytes keys."""
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise KeyError(key)


def parse_cifar_batch(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (uint8 [N, 32, 32, 3] images, int64 [N] labels)."""
    d = safe_unpickle(data, what)
    try:
        x, y = _key(d, "data"), np.asarray(_key(d, "labels"))
    except (KeyError, TypeError) as e:
        raise DataError(f"{what}: a CIFAR-10 batch is a dict with 'data' and 'labels' ({type(e).__name__}: {e})") from None
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == 3 * 32 * 32 and len(x) <= CIFAR_BATCH):
        raise DataError(f"{what}: 'data' must be uint8 [N, 3072] with N <= {CIFAR_BATCH} (an official batch), "
                        f"got {getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    if y.shape != (len(x),) or y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"{what}: 'labels' must be {len(x)} integers 0..9")
    # rows hold the R, G and B planes of a 32x32 image one after another: [N, 3, 32, 32] -> [N, 32, 32, 3]
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y.astype(np.int64)


class _Budget:
    """Bytes that may still be read out of one archive (params data.max_expanded_mb)."""

    def __init__(self, archive: Path, limit: int | None):
        self.archive, self.left = archive, limit

    def take(self, m: tarfile.TarInfo) -> None:
        if m.size > MAX_MEMBER_BYTES:
            raise DataError(f"{self.archive.name}: {m.name} is {m.size} bytes, more than a member of this dataset can be")
        if self.left is not None:
            self.left -= m.size
            if self.left < 0:
                raise DataError(f"{self.archive.name}: the selected members expand beyond data.max_expanded_mb; refusing to read on")


def read_cifar10(archive: Path, splits: list[str], max_bytes: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images, labels)} from the python-version tarball, in one sequential pass.

    train = every `data_batch_<k>` in the archive in order of k (1..5 in the official one), test =
    `test_batch`. Members are read into memory, never extracted, so their names reach no file system;
    at most `max_bytes` of them in all.
    """
    budget = _Budget(archive, max_bytes)
    pattern = re.compile(r"^(?:\./)?cifar-10-batches-py/(data_batch_(\d+)|test_batch)$")
    found: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    try:
        with tarfile.open(archive, "r:*") as t:
            for m in t:
                hit = pattern.match(m.name)
                if not hit or not m.isfile():
                    continue
                split, k = ("train", int(hit.group(2))) if hit.group(2) else ("test", 0)
                if split not in splits:
                    continue
                budget.take(m)
                found[split].append((k, *parse_cifar_batch(t.extractfile(m).read(), f"{archive.name}:{m.name}")))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive.name}: not a readable tar.gz archive ({type(e).__name__}: {e})") from None
    out = {}
    for split in splits:
        batches = sorted(found[split], key=lambda b: b[0])
        if not batches:
            raise DataError(f"{archive.name} holds no {'data_batch_<k>' if split == 'train' else 'test_batch'} under cifar-10-batches-py/: not the CIFAR-10 python version")
        out[split] = (np.concatenate([b[1] for b in batches]), np.concatenate([b[2] for b in batches]))
    return out


# ---------------------------------------------------------------------------------------------
# Oxford Flowers 102


def read_flowers_meta(labels_mat: Path, setid_mat: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(labels [n_images] in 1..102, indexed by image id - 1; {split: sorted image ids}) from the .mat files."""
    from scipy.io import loadmat  # MAT v5 parser: reads arrays, runs nothing

    def integers(a, what: str) -> np.ndarray:
        a = np.asarray(a).reshape(-1)
        if a.dtype.kind not in "iuf" or (a.dtype.kind == "f" and not np.all(np.isfinite(a) & (a == np.round(a)))):
            raise DataError(f"{what} must hold whole numbers, got {a.dtype} values such as {a[:3].tolist()}")
        return a.astype(np.int64)

    try:
        labels = integers(loadmat(labels_mat)["labels"], f"{labels_mat.name}: labels")
        sets = loadmat(setid_mat)
        ids = {s: np.sort(integers(sets[k], f"{setid_mat.name}: {k}")) for s, k in (("train", "trnid"), ("val", "valid"), ("test", "tstid"))}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001  scipy's MAT reader raises MatReadError, IndexError, ValueError, ... on a bad file
        raise DataError(f"{labels_mat.name} / {setid_mat.name}: not the Flowers 102 label files ({type(e).__name__}: {str(e)[:120]})") from None
    if not len(labels) or labels.min() < 1 or labels.max() > 102:
        raise DataError(f"{labels_mat.name}: labels must be 1..102")
    for s, v in ids.items():
        if len(v) and (v.min() < 1 or v.max() > len(labels)):
            raise DataError(f"{setid_mat.name}: {s} ids must be image numbers 1..{len(labels)}")
    return labels, ids


def write_flowers(archive: Path, wanted: dict[int, str], images_dir: Path, max_bytes: int | None = None) -> dict[int, Path]:
    """Copy the JPEG of every image id in `wanted` (id -> output file name) out of 102flowers.tgz (at most `max_bytes`)."""
    budget = _Budget(archive, max_bytes)
    pattern = re.compile(r"^(?:\./)?jpg/image_(\d{5})\.jpg$")
    written: dict[int, Path] = {}
    try:
        with tarfile.open(archive, "r:*") as t:
            for m in t:
                hit = pattern.match(m.name)
                if not hit or not m.isfile() or int(hit.group(1)) not in wanted:
                    continue
                budget.take(m)
                i = int(hit.group(1))
                written[i] = images_dir / wanted[i]
                written[i].write_bytes(t.extractfile(m).read())  # the original bytes: no re-encoding
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive.name}: not a readable tgz archive ({type(e).__name__}: {e})") from None
    missing = sorted(set(wanted) - set(written))
    if missing:
        raise DataError(f"{archive.name} lacks jpg/image_{missing[0]:05d}.jpg ({len(missing)} of the selected images missing)")
    return written


# ---------------------------------------------------------------------------------------------
# The download stage's entry point


def _select(labels: np.ndarray, keep: set[int] | None) -> np.ndarray:
    return np.flatnonzero(np.isin(labels, sorted(keep))) if keep is not None else np.arange(len(labels))


def fetch_preset(
    preset: str,
    url: str,
    sha256: Mapping[str, str],
    splits: Iterable[str],
    classes: Iterable[int | str],
    max_images: int,
    images_dir: Path,
    fetch: Fetch,
    max_expanded_bytes: int | None = None,
) -> PresetResult:
    """Fetch a preset's official files with `fetch(url, sha256)` (verified, cached), parse them and
    write the selected examples into `images_dir`; returns the written paths and manifest fields.

    Selection: the splits in the given order, each in its official order, only the classes in
    `classes` ([] = all), then the first `max_images` (0 = all). `max_expanded_bytes` bounds what
    is read out of an archive (the IDX reader bounds itself by MAX_IDX_BYTES).
    """
    if preset not in SPECS:
        raise DataError(f"data.source: {preset!r} is not a preset; allowed: {', '.join(PRESETS)}")
    pins = check_files(preset, url, sha256)
    splits, keep = check_options(preset, splits, classes, max_images)
    images_dir.mkdir(parents=True, exist_ok=True)

    def get(name: str) -> Path:
        return fetch(_file_url(url, name), pins[name])

    # 1. labels of every candidate, in selection order: (split, index or image id, label)
    chosen: list[tuple[str, int, int]] = []
    arrays: dict[str, np.ndarray] = {}
    if preset == "flowers102":
        labels, ids = read_flowers_meta(get("imagelabels.mat"), get("setid.mat"))
        for s in splits:
            chosen += [(s, int(i), int(labels[i - 1])) for i in ids[s] if keep is None or labels[i - 1] in keep]
    else:
        if preset == "cifar10":
            data = read_cifar10(get(CIFAR_ARCHIVE), splits, max_expanded_bytes)
        else:
            data = {s: read_idx_split(get(IDX_FILES[s][0]), get(IDX_FILES[s][1])) for s in splits}
        for s in splits:
            x, y = data[s]
            arrays[s] = x
            chosen += [(s, int(i), int(y[i])) for i in _select(y, keep)]
    if max_images:
        chosen = chosen[:max_images]
    if not chosen:
        raise DataError(f"{preset}: no image left after data.preset.splits={splits} and classes={list(classes)}")

    # 2. write them: PNG (lossless) for array formats, the original JPEG bytes for Flowers 102
    paths: list[Path] = []
    if preset == "flowers102":
        names = {i: f"{s}_{i:05d}_{class_name(preset, c)}.jpg" for s, i, c in chosen}
        written = write_flowers(get("102flowers.tgz"), names, images_dir, max_expanded_bytes)
        paths = [written[i] for _, i, _ in chosen]
    else:
        for s, i, c in chosen:
            p = images_dir / f"{s}_{i:05d}_{class_name(preset, c)}.png"
            Image.fromarray(arrays[s][i]).save(p)  # [H, W] -> mode L (grey), [H, W, 3] -> RGB
            paths.append(p)

    counts: dict[str, int] = {}
    for _, _, c in chosen:
        counts[class_name(preset, c)] = counts.get(class_name(preset, c), 0) + 1
    manifest = {
        "preset": preset,
        "url": url,
        "sha256": pins,
        "splits": splits,
        "classes": sorted(counts),
        "class_counts": dict(sorted(counts.items())),
        "split_counts": {s: sum(1 for x in chosen if x[0] == s) for s in splits},
        "max_images": max_images,
    }
    return PresetResult(paths, manifest)

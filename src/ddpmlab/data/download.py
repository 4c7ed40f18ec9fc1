"""Raw data acquisition: checksummed downloads, a reusable cache, safe archive extraction.

Three sources (params `data.source`):
  pypi    a package-registry source distribution fetched with `pip download` (the default:
          the `pokemon==0.36` sdist with 1,008 official artworks), works wherever pip does;
  url     an http(s):// or file:// archive with its sha256, for users with internet;
  folder  a local folder of images.

Downloads land in a cache keyed by sha256 (``$XDG_CACHE_HOME/ddpmlab/downloads``), are verified
before use and re-verified on reuse, so a second run does not fetch again and a corrupted copy
is fetched anew instead of being trusted.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ddpmlab.config import SOURCES, _choice, get
from ddpmlab.errors import DataError, ParamError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ddpmlab"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected.lower():
        raise DataError(
            f"checksum mismatch for {what} ({path}):\n  expected sha256 {expected}\n  actual   sha256 {actual}\n"
            "The file is corrupt or not the one the params name. Fix the sha256 in params.yaml only if you trust the new file."
        )


def _check_sha(key: str, value: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value.lower()):
        raise ParamError(key, value, "a 64-character hexadecimal sha256")
    return value.lower()


def _cached(sha256: str, filename: str) -> Path:
    return cache_root() / "downloads" / sha256 / filename


def _reuse(path: Path, sha256: str) -> bool:
    """True if a cached copy exists and still matches; a bad copy is removed so it is fetched anew."""
    if not path.is_file():
        return False
    if sha256_file(path) == sha256:
        return True
    print(f"cached copy {path} does not match its sha256; fetching again", file=sys.stderr)
    path.unlink()
    return False


def fetch_url(url: str, sha256: str) -> Path:
    """Download `url` (http, https or file) into the cache, verify it, return the cached path."""
    sha256 = _check_sha("data.url_sha256", sha256)
    name = PurePosixPath(urllib.request.urlparse(url).path).name or "download"
    dest = _cached(sha256, name)
    if _reuse(dest, sha256):
        print(f"using cached {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}") as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
    except (OSError, ValueError) as e:  # URLError is an OSError
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download {url}: {e}. Check the URL and your connection, or use data.source: folder.") from e
    try:
        verify_sha256(tmp, sha256, url)
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)  # atomic: the cache never holds a partial or unverified file
    return dest


def fetch_pypi(spec: str, sha256: str, wheel: bool = False, key: str = "data.pypi") -> Path:
    """`pip download` the distribution `spec` (e.g. 'pokemon==0.36') into the cache and verify it.

    wheel=False takes the source distribution, wheel=True the (pure-Python) wheel. `key` names
    the params section in error messages.
    """
    sha256 = _check_sha(f"{key}.sha256" if not wheel else f"{key}.wheel_sha256", sha256)
    if not re.match(r"^[A-Za-z0-9_.\-]+==[A-Za-z0-9_.\-+]+$", spec or ""):
        raise ParamError(f"{key}.package", spec, "an exact requirement 'name==version'")
    folder = cache_root() / "downloads" / sha256
    existing = [p for p in folder.glob("*") if p.is_file() and not p.name.endswith(".part")] if folder.is_dir() else []
    for p in existing:
        if _reuse(p, sha256):
            print(f"using cached {p}")
            return p
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        kind = ["--only-binary", ":all:"] if wheel else ["--no-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "--disable-pip-version-check", "-d", tmp, spec]
        print("fetching", spec, "with:", " ".join(cmd[2:]))
        r = subprocess.run(cmd, capture_output=True, text=True)
        files = list(Path(tmp).iterdir())
        if r.returncode != 0 or len(files) != 1:
            raise DataError(f"`pip download {spec}` failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
        verify_sha256(files[0], sha256, spec)
        dest = folder / files[0].name
        os.replace(files[0], dest)
    return dest


# ---------------------------------------------------------------------------------------------
# Archives


def _safe_name(name: str, what: str) -> PurePosixPath:
    """Reject absolute names and names with '..' so nothing escapes the target folder."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", name):
        raise DataError(f"refusing to extract {what}: entry {name!r} would escape the target folder")
    return p


def list_archive(archive: Path) -> list[str]:
    """Names of the regular files in a tar or zip archive, after the safety checks."""
    names = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                _safe_name(info.filename, archive.name)
                if not info.is_dir():
                    names.append(info.filename)
        return names
    try:
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                _safe_name(m.name, archive.name)
                if m.issym() or m.islnk():
                    _safe_name(os.path.normpath(os.path.join(os.path.dirname(m.name), m.linkname)), archive.name)
                    continue  # links are never extracted: they could point anywhere on disk
                if m.isfile():
                    names.append(m.name)
    except tarfile.TarError as e:
        raise DataError(f"{archive} is neither a zip nor a tar archive ({e})") from e
    return names


def read_member(archive: Path, name: str) -> bytes:
    _safe_name(name, archive.name)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            return z.read(name)
    with tarfile.open(archive) as t:
        m = t.getmember(name)
        if not m.isfile():
            raise DataError(f"{archive.name}: {name} is not a regular file")
        return t.extractfile(m).read()


def extract_members(archive: Path, names: list[str], dest: Path, rename=lambda n: PurePosixPath(n).name) -> list[Path]:
    """Extract the regular files `names` into `dest`, each as `rename(name)`; returns written paths."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written = []
    wanted = set(names)
    targets = {}
    for name in names:
        target = (dest / _safe_name(rename(name), archive.name)).resolve()
        if root not in target.parents:
            raise DataError(f"refusing to extract {archive.name}: {name!r} would escape {dest}")
        if target in targets.values():
            raise DataError(f"{archive.name}: two entries would both be written to {target.name}")
        targets[name] = target

    def write(name, data):
        targets[name].parent.mkdir(parents=True, exist_ok=True)
        targets[name].write_bytes(data)
        written.append(targets[name])

    with tqdm(total=len(names), desc=f"extract {archive.name}", unit="file") as bar:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for name in names:
                    write(name, z.read(name))
                    bar.update(1)
        else:
            with tarfile.open(archive) as t:  # one sequential pass: random access into .tar.gz is quadratic
                for m in t:
                    if m.isfile() and m.name in wanted:
                        write(m.name, t.extractfile(m).read())
                        bar.update(1)
    return sorted(written)


# ---------------------------------------------------------------------------------------------
# The stage


@dataclass
class DownloadResult:
    source: str
    images: list[Path]
    manifest: dict = field(default_factory=dict)


def _flat_name(rel: str) -> str:
    """'class_a/001.png' -> 'class_a__001.png': unique flat names for nested folders."""
    return "__".join(PurePosixPath(rel).parts)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _id_filter(id_range):
    if id_range in ([], None):
        return lambda stem: True
    if not (isinstance(id_range, list) and len(id_range) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in id_range) and id_range[0] <= id_range[1]):
        raise ParamError("data.pypi.id_range", id_range, "[lo, hi] integers with lo <= hi (generation one: [1, 151]), or [] for all")
    lo, hi = id_range
    return lambda stem: stem.isdigit() and lo <= int(stem) <= hi


def run_download(params: dict, out_dir: Path) -> DownloadResult:
    """Fetch the configured source into `out_dir/images` and write `out_dir/manifest.json`."""
    source = _choice(params, "data.source", SOURCES)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    images_dir = out_dir / "images"
    manifest: dict = {"source": source}

    if source == "pypi":
        spec, sha = get(params, "data.pypi.package"), get(params, "data.pypi.sha256")
        members, names_member = get(params, "data.pypi.members"), get(params, "data.pypi.names")
        keep = _id_filter(get(params, "data.pypi.id_range"))
        archive = fetch_pypi(spec, sha)
        selected = sorted(
            (n for n in list_archive(archive) if fnmatch.fnmatch(n, members) and keep(PurePosixPath(n).stem)),
            key=lambda n: (not PurePosixPath(n).stem.isdigit(), int(PurePosixPath(n).stem) if PurePosixPath(n).stem.isdigit() else 0, n),
        )
        if not selected:
            raise DataError(f"no archive entry of {archive.name} matches data.pypi.members={members!r} within data.pypi.id_range")
        paths = extract_members(archive, selected, images_dir)
        id_names = {}
        if names_member:
            table = json.loads(read_member(archive, names_member))
            id_names = {p.stem: table[p.stem]["name"] for p in paths if p.stem in table and "name" in table[p.stem]}
        manifest.update(package=spec, sha256=sha, archive=archive.name, names=id_names)

    elif source == "url":
        url = get(params, "data.url")
        if not isinstance(url, str) or not re.match(r"^(https?|file)://", url):
            raise ParamError("data.url", url, "an http://, https:// or file:// URL of a .tar/.tar.gz/.tgz/.zip archive")
        archive = fetch_url(url, get(params, "data.url_sha256"))
        selected = sorted(n for n in list_archive(archive) if _is_image(n) and not PurePosixPath(n).name.startswith("."))
        if not selected:
            raise DataError(f"{archive.name} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        paths = extract_members(archive, selected, images_dir, rename=_flat_name)
        manifest.update(url=url, sha256=get(params, "data.url_sha256"), archive=archive.name)

    else:  # folder
        folder = get(params, "data.folder")
        if not folder or not Path(folder).is_dir():
            raise ParamError("data.folder", folder, "an existing folder of images (searched recursively)")
        folder = Path(folder)
        found = sorted(p for p in folder.rglob("*") if p.is_file() and _is_image(p.name))
        if not found:
            raise DataError(f"{folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        images_dir.mkdir(parents=True)
        paths = []
        for p in found:
            target = images_dir / _flat_name(p.relative_to(folder).as_posix())
            shutil.copyfile(p, target)
            paths.append(target)
        manifest.update(folder=str(folder))

    manifest["count"] = len(paths)
    manifest["files"] = {p.name: sha256_file(p) for p in paths}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return DownloadResult(source, paths, manifest)

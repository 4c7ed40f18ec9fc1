"""Raw data acquisition that is safe to point at anything: checksummed, bounded, no code run.

Three sources (params `data.source`):
  pypi    a source distribution fetched as a plain file from the package index's simple API
          (PEP 691 JSON or PEP 503 HTML; the index pip is configured with): the default is the
          `pokemon==0.36` sdist with 1,008 official artworks. Nothing from it is ever executed
          (no pip, no setup.py): its sha256 is checked before it is opened and only the image
          members and the names table are read;
  url     an http(s):// or file:// archive with its sha256, for users with internet;
  folder  a local folder of images;
  cifar10, mnist, fashion_mnist, flowers102
          dataset presets: their official files through `fetch_url`, parsed by data.presets.

Every download streams to a `.part` file under a connect/read timeout, an overall deadline and a
size limit, and the `.part` file is removed on any failure. Archives are refused when their
members (by their headers) would expand beyond a total limit, and the limit is enforced again
while extracting. Downloads land in a cache keyed by sha256 (``$XDG_CACHE_HOME/ddpmlab/downloads``),
verified before use and re-verified on reuse.

The stage writes into a fresh temporary folder beside its output and swaps it in only when
everything succeeded, so a failure leaves the previous output untouched, and it removes only a
folder it wrote itself (recognised by its manifest): a user's folder is never deleted.
"""

from __future__ import annotations

import configparser
import fnmatch
import hashlib
import html.parser
import io
import json
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ddpmlab.core.errors import DataError
from ddpmlab.pipeline.data import presets
from ddpmlab.pipeline.schema import SOURCES, ParamError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SPEC = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")  # name==version, nothing else
MB = 1 << 20
DEFAULT_INDEX = "https://pypi.org/simple"

# Defaults of the limits (params data.timeout_s, data.deadline_s, data.max_download_mb, data.max_expanded_mb)
TIMEOUT_S = 30.0          # connect and per-read socket timeout
DEADLINE_S = 1800.0       # whole download, however slowly the bytes arrive
MAX_DOWNLOAD_MB = 1024.0  # Oxford Flowers 102 is 330 MB, the Inception wheel 81 MB
MAX_EXPANDED_MB = 4096.0  # all regular members of one archive together
INDEX_PAGE_MB = 32.0      # a simple-API project page (torch's is about 1 MB)
NAMES_MEMBER_MB = 16.0    # the id -> name table read from an archive


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
            f"checksum mismatch for {what}: expected sha256 {expected}, actual sha256 {actual} "
            "(the file is corrupt or not the one the params name; change the sha256 in params.yaml only if you trust the new file)"
        )


def _check_sha(key: str, value: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value.lower()):
        raise ParamError(key, value, "a 64-character hexadecimal sha256")
    return value.lower()


def check_url(url: str, key: str = "data.url") -> str:
    """An http(s):// or file:// URL without whitespace, control characters or '..' segments."""
    allowed = "an http://, https:// or file:// URL without spaces, control characters or '..' path segments"
    if not isinstance(url, str) or not url or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ParamError(key, url, allowed)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise ParamError(key, url, allowed) from None
    path = urllib.parse.unquote(parts.path)
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.hostname):
        raise ParamError(key, url, allowed)
    if ".." in path.replace("\\", "/").split("/"):
        raise ParamError(key, url, allowed)
    return url


def _file_name(url: str) -> str:
    """A safe cache file name from the URL's last path segment."""
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
    return name[:200] or "download"


def _cached(sha256: str, filename: str) -> Path:
    return cache_root() / "downloads" / sha256 / filename


def _reuse(path: Path, sha256: str) -> bool:
    """True if a cached copy exists and still matches; a bad copy is removed so it is fetched anew."""
    if not path.is_file() or path.is_symlink():
        return False
    if sha256_file(path) == sha256:
        return True
    print(f"cached copy {path} does not match its sha256; fetching again", file=sys.stderr)
    path.unlink()
    return False


def _stream(url: str, out, *, timeout_s: float, deadline_s: float, max_bytes: int, headers=None, desc: str = "") -> dict:
    """Copy the body of `url` into the binary file `out` under the three limits; returns the response headers.

    `timeout_s` bounds the connection and every single read; the deadline is checked after every
    read (read1 returns whatever has arrived), so a server trickling one byte per second is cut
    off at the deadline (plus at most one `timeout_s`); `max_bytes` stops an endless response.
    """
    start = time.monotonic()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file" and not Path(urllib.request.url2pathname(parts.path)).is_file():
        raise DataError(f"could not download {url}: not a regular file (a folder, device or pipe has no end to wait for)")
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DataError(f"{url} is {int(declared) / MB:.1f} MB, more than the limit of {max_bytes / MB:g} MB (data.max_download_mb)")
            read = getattr(resp, "read1", resp.read)
            n = 0
            with tqdm(total=int(declared) if declared and declared.isdigit() else None, unit="B", unit_scale=True, desc=desc or "download", disable=None if desc else True) as bar:  # None: a bar only on a terminal
                while block := read(1 << 16):
                    n += len(block)
                    if n > max_bytes:
                        raise DataError(f"{url} sent more than the limit of {max_bytes / MB:g} MB (data.max_download_mb); download stopped")
                    out.write(block)
                    bar.update(len(block))
                    if time.monotonic() - start > deadline_s:
                        raise DataError(f"{url} did not finish within the deadline of {deadline_s:g} s (data.deadline_s); {n} bytes received")
            return dict(resp.headers.items())
    except DataError:
        raise
    except (socket.timeout, TimeoutError) as e:
        raise DataError(f"could not download {url}: no data for {timeout_s:g} s (data.timeout_s) ({e})") from None
    except urllib.error.HTTPError as e:
        raise DataError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
    except (OSError, ValueError, EOFError) as e:  # URLError, connection resets, incomplete reads (http.client errors)
        raise DataError(f"could not download {url}: {type(e).__name__}: {e}. Check the URL and your connection, or use data.source: folder") from None
    except Exception as e:  # http.client.HTTPException and friends: a broken server is an input error, not a bug
        raise DataError(f"could not download {url}: {type(e).__name__}: {e}") from None


def fetch_url(url: str, sha256: str, *, name: str | None = None, timeout_s: float = TIMEOUT_S, deadline_s: float = DEADLINE_S,
              max_mb: float = MAX_DOWNLOAD_MB, key: str = "data.url") -> Path:
    """Download `url` (http, https or file) into the cache, verify it, return the cached path.

    The only way files enter the cache: streamed to a `.part` file under the limits, removed on any
    failure (including Ctrl-C), verified against `sha256`, then renamed into place atomically.
    """
    sha256 = _check_sha(f"{key}_sha256" if key == "data.url" else f"{key}.sha256", sha256)
    check_url(url, key)
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".") if name else _file_name(url)
    dest = _cached(sha256, name or "download")
    if _reuse(dest, sha256):
        print(f"using cached {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    tmp = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, timeout_s=timeout_s, deadline_s=deadline_s, max_bytes=int(max_mb * MB), desc=f"download {dest.name}")
        verify_sha256(tmp, sha256, url)
        os.replace(tmp, dest)  # atomic: the cache never holds a partial or unverified file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


# ---------------------------------------------------------------------------------------------
# The package index (simple API), read as data


def normalize(name: str) -> str:
    """PEP 503 project-name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_spec(spec: str, key: str = "data.pypi.package") -> tuple[str, str]:
    """'name==version' -> (name, version); anything else (options, ranges, URLs) is refused."""
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    if not m:
        raise ParamError(key, spec, "a pinned requirement name==version (e.g. pokemon==0.36); options and ranges are refused")
    return m.group(1), m.group(2)


def pip_index_urls() -> list[str]:
    """The index URL pip is configured with, then its extra index URLs (pip's own precedence).

    Config files in pip's order (later ones win): global (/etc/xdg/pip/pip.conf, /etc/pip.conf), user
    (~/.pip/pip.conf, ~/.config/pip/pip.conf), site (sys.prefix/pip.conf), PIP_CONFIG_FILE; sections
    [global] then [download]; then the environment (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL).
    """
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep)
    home_cfg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    files = [Path(d) / "pip" / "pip.conf" for d in reversed(xdg_dirs) if d] + [Path("/etc/pip.conf"),
             Path.home() / ".pip" / "pip.conf", home_cfg / "pip" / "pip.conf", Path(sys.prefix) / "pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        files = [] if os.environ["PIP_CONFIG_FILE"] == os.devnull else files + [Path(os.environ["PIP_CONFIG_FILE"])]
    index, extra = DEFAULT_INDEX, []
    for f in files:
        cp = configparser.RawConfigParser()
        try:
            cp.read(f)
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue  # pip would complain; for us an unreadable config means "not configured"
        for section in ("global", "download"):
            if cp.has_section(section):
                for k, v in cp.items(section):
                    k = k.replace("_", "-")
                    if k == "index-url" and v.strip():
                        index = v.strip()
                    elif k == "extra-index-url":
                        extra = v.split()
    index = os.environ.get("PIP_INDEX_URL") or index
    if "PIP_EXTRA_INDEX_URL" in os.environ:
        extra = os.environ["PIP_EXTRA_INDEX_URL"].split()
    return [index] + [u for u in extra if u != index]


class _Anchors(html.parser.HTMLParser):
    """<a href=...>text</a> pairs of a PEP 503 page."""

    def __init__(self):
        super().__init__()
        self.links, self._href, self._text = [], None, []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data):
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _project_files(index: str, project: str, timeout_s: float, deadline_s: float) -> list[dict] | None:
    """[{filename, url, sha256|None}] of one project on a simple index; None if the index does not have it."""
    base = index.rstrip("/") + f"/{project}/"
    page = base
    if urllib.parse.urlsplit(base).scheme == "file":  # a local index is a folder tree; its pages are index.html
        local = Path(urllib.request.url2pathname(urllib.parse.urlsplit(base).path))
        if not (local / "index.html").is_file():
            return None
        page = (local / "index.html").as_uri()
    buf = io.BytesIO()
    accept = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
    try:
        headers = _stream(page, buf, timeout_s=timeout_s, deadline_s=deadline_s, max_bytes=int(INDEX_PAGE_MB * MB), headers={"Accept": accept})
    except DataError as e:
        if "HTTP 404" in str(e):
            return None
        raise
    body = buf.getvalue()
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    files = []
    try:
        if "json" in ctype:  # PEP 691
            for f in json.loads(body)["files"]:
                files.append({"filename": f["filename"], "url": urllib.parse.urljoin(base, f["url"]), "sha256": (f.get("hashes") or {}).get("sha256")})
        else:  # PEP 503
            parser = _Anchors()
            parser.feed(body.decode("utf-8", "replace"))
            for href, text in parser.links:
                url, _, frag = urllib.parse.urljoin(base, href).partition("#")
                sha = frag[len("sha256="):] if frag.startswith("sha256=") else None
                files.append({"filename": text or PurePosixPath(urllib.parse.urlsplit(url).path).name, "url": url, "sha256": sha})
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"the package index page {page} cannot be read ({type(e).__name__}: {e})") from None
    return files


def _matches(filename: str, name: str, version: str, wheel: bool) -> bool:
    """`name-version.tar.gz` (sdist) or a pure-Python `name-version-...-none-any.whl` (wheel)."""
    if wheel:
        parts = filename[:-4].split("-") if filename.endswith(".whl") else []
        return len(parts) in (5, 6) and normalize(parts[0]) == normalize(name) and parts[1] == version and parts[-2:] == ["none", "any"]
    if not filename.endswith(".tar.gz"):
        return False
    n, _, v = filename[: -len(".tar.gz")].rpartition("-")
    return normalize(n) == normalize(name) and v == version


def fetch_pypi(spec: str, sha256: str, wheel: bool = False, key: str = "data.pypi", *, index_urls: list[str] | None = None,
               timeout_s: float = TIMEOUT_S, deadline_s: float = DEADLINE_S, max_mb: float = MAX_DOWNLOAD_MB) -> Path:
    """The distribution file of `spec` ('name==version'): sdist, or the pure-Python wheel with wheel=True.

    Read from the simple API of the configured index (then the extra indexes) and fetched with
    `fetch_url`'s limits and sha256 check; nothing is installed, built or executed. `key` names the
    params section in error messages.
    """
    sha_key = f"{key}.wheel_sha256" if wheel else f"{key}.sha256"
    sha256 = _check_sha(sha_key, sha256)
    name, version = parse_spec(spec, f"{key}.package")
    folder = cache_root() / "downloads" / sha256
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if not p.name.endswith(".part") and _matches(p.name, name, version, wheel) and _reuse(p, sha256):
                print(f"using cached {p}")
                return p
    kind = "wheel" if wheel else "source distribution"
    tried, errors = [], []
    for index in index_urls if index_urls is not None else pip_index_urls():
        tried.append(index)
        try:
            files = _project_files(index, normalize(name), timeout_s, deadline_s)
        except DataError as e:  # an unreachable index: the next one may serve the same pinned file
            errors.append(str(e))
            continue
        cands = [f for f in files or [] if _matches(f["filename"], name, version, wheel)]
        if not cands:
            continue
        cands.sort(key=lambda f: (f["sha256"] != sha256, f["filename"]))  # the pinned file first, if listed
        f = cands[0]
        if f["sha256"] and f["sha256"].lower() != sha256:  # the index's own hash already disagrees: do not download
            raise DataError(f"checksum mismatch for {f['filename']} on {index}: expected sha256 {sha256}, actual sha256 {f['sha256']} "
                            f"(per the index; change {sha_key} only if you trust the new file)")
        print(f"fetching {f['filename']} from {index}")
        return fetch_url(f["url"], sha256, name=f["filename"], timeout_s=timeout_s, deadline_s=deadline_s, max_mb=max_mb, key=key)
    if errors:
        raise DataError(f"{kind} {spec} not found on a reachable package index ({'; '.join(errors)})")
    raise DataError(f"no {kind} {spec} on the package index ({', '.join(tried)}); check {key}.package")


# ---------------------------------------------------------------------------------------------
# Archives

_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError)


def _safe_name(name: str, what: str) -> PurePosixPath:
    """Reject absolute names and names with '..' so nothing escapes the target folder."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
        raise DataError(f"refusing to extract {what}: entry {name!r} would escape the target folder")
    return p


def _corrupt(archive: Path, e: Exception) -> DataError:
    return DataError(f"{archive.name} is truncated or corrupt ({type(e).__name__}: {e}); delete it from {archive.parent} or check its source")


def list_archive(archive: Path, max_expanded_mb: float = MAX_EXPANDED_MB) -> list[str]:
    """Names of the regular files in a tar or zip archive, after the safety checks.

    The sizes in the member headers are summed while listing: an archive that would expand beyond
    `max_expanded_mb` is refused as soon as its headers say so, before anything is extracted (a
    3 MB tar.gz of 3 GiB of zeros stops at its first header).
    """
    limit, total, names = int(max_expanded_mb * MB), 0, []

    def add(size: int, name: str):
        nonlocal total
        total += max(size, 0)
        if total > limit:
            raise DataError(f"{archive.name} would expand to more than {max_expanded_mb:g} MB (data.max_expanded_mb; at member {name!r}); refused")

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    _safe_name(info.filename, archive.name)
                    if not info.is_dir():
                        add(info.file_size, info.filename)
                        names.append(info.filename)
            return names
        with tarfile.open(archive) as t:
            for m in t:  # lazily: each header is checked before the stream moves past its data
                _safe_name(m.name, archive.name)
                if m.issym() or m.islnk():
                    _safe_name(os.path.normpath(os.path.join(os.path.dirname(m.name), m.linkname)), archive.name)
                    continue  # links are never extracted: they could point anywhere on disk
                if m.isfile():
                    add(m.size, m.name)
                    names.append(m.name)
    except DataError:
        raise
    except tarfile.ReadError as e:
        if not names:
            raise DataError(f"{archive} is neither a zip nor a tar archive, or is truncated or corrupt ({e})") from None
        raise _corrupt(archive, e) from None
    except _ARCHIVE_ERRORS as e:
        raise _corrupt(archive, e) from None
    return names


def _copy_limited(src, dst, budget: list[int], what: str, limit_mb: float) -> None:
    """Stream `src` to `dst`, charging `budget[0]` bytes; stop when the archive's expansion budget runs out."""
    while block := src.read(1 << 20):
        budget[0] -= len(block)
        if budget[0] < 0:
            raise DataError(f"{what} expands to more than {limit_mb:g} MB (data.max_expanded_mb); refused")
        dst.write(block)


def read_member(archive: Path, name: str, max_mb: float = NAMES_MEMBER_MB, key: str = "data.pypi.names") -> bytes:
    """One member's bytes (at most `max_mb`); a missing or unreadable member names `key`."""
    _safe_name(name, archive.name)
    buf, budget = io.BytesIO(), [int(max_mb * MB)]
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z, z.open(name) as src:
                _copy_limited(src, buf, budget, f"{key} = {name!r}", max_mb)
            return buf.getvalue()
        with tarfile.open(archive) as t:
            for m in t:
                if m.name == name:
                    if not m.isfile():
                        raise DataError(f"params.yaml: {key} = {name!r}: not a regular file in {archive.name}")
                    _copy_limited(t.extractfile(m), buf, budget, f"{key} = {name!r}", max_mb)
                    return buf.getvalue()
    except KeyError:
        pass
    except DataError:
        raise
    except _ARCHIVE_ERRORS as e:
        raise _corrupt(archive, e) from None
    raise DataError(f"params.yaml: {key} = {name!r}: no such member in {archive.name}")


def extract_members(archive: Path, names: list[str], dest: Path, rename=lambda n: PurePosixPath(n).name,
                    max_expanded_mb: float = MAX_EXPANDED_MB) -> list[Path]:
    """Extract the regular files `names` into `dest`, each as `rename(name)`; returns written paths.

    Bytes are streamed (never a whole member in memory) and counted against `max_expanded_mb`.
    On any error every file written so far is removed again.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written: list[Path] = []
    wanted = set(names)
    targets = {}
    for name in names:
        target = (dest / _safe_name(rename(name), archive.name)).resolve()
        if root not in target.parents:
            raise DataError(f"refusing to extract {archive.name}: {name!r} would escape {dest}")
        if target in targets.values():
            raise DataError(f"{archive.name}: two entries would both be written to {target.name}")
        targets[name] = target
    budget = [int(max_expanded_mb * MB)]

    def write(name, src):
        targets[name].parent.mkdir(parents=True, exist_ok=True)
        written.append(targets[name])
        with open(targets[name], "xb") as out:  # x: never overwrite (a duplicate entry name in the archive)
            _copy_limited(src, out, budget, archive.name, max_expanded_mb)

    try:
        with tqdm(total=len(names), desc=f"extract {archive.name}", unit="file", disable=None) as bar:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as z:
                    for name in names:
                        with z.open(name) as src:  # the CRC is checked at the member's end: BadZipFile
                            write(name, src)
                        bar.update(1)
            else:
                with tarfile.open(archive) as t:  # one sequential pass: random access into .tar.gz is quadratic
                    for m in t:
                        if m.isfile() and m.name in wanted and targets[m.name] not in written:
                            write(m.name, t.extractfile(m))
                            bar.update(1)
    except BaseException as e:
        for p in written:
            p.unlink(missing_ok=True)
        if isinstance(e, FileExistsError):
            raise DataError(f"{archive.name}: an entry would overwrite {e.filename}") from None
        if isinstance(e, _ARCHIVE_ERRORS) and not isinstance(e, DataError):
            raise _corrupt(archive, e) from None
        raise
    missing = [n for n in names if targets[n] not in written]
    if missing:
        for p in written:
            p.unlink(missing_ok=True)
        raise DataError(f"{archive.name}: {len(missing)} listed entries could not be read (first: {missing[0]!r})")
    return sorted(written)


# ---------------------------------------------------------------------------------------------
# Names: collision-free flat names for nested sources


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _flat_name(rel: str) -> str:
    """'class_a/001.png' -> 'class_a__001.png' (kept for callers; flat_names() makes them unique)."""
    return "__".join(PurePosixPath(rel).parts)


def flat_names(rels: list[str], flatten=_flat_name) -> dict[str, str]:
    """Relative paths -> unique flat file names.

    Names are `flatten(rel)`; where two paths would get the same name (also up to case, for
    case-insensitive file systems: 'a/b.png' and 'a__b.png', or 'A.png' and 'a.png'), each of them
    gets the first 8 hex digits of the sha256 of its relative path before the extension. The result
    depends only on the set of paths, so reruns name files identically.
    """
    first = {rel: re.sub(r"[\x00-\x1f/\\]", "_", flatten(rel)) for rel in rels}
    count: dict[str, int] = {}
    for n in first.values():
        count[n.lower()] = count.get(n.lower(), 0) + 1
    out = {}
    for rel, n in first.items():
        if count[n.lower()] > 1:
            stem, dot, ext = n.rpartition(".")
            tag = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:8]
            n = f"{stem}.{tag}.{ext}" if dot else f"{n}.{tag}"
        out[rel] = n
    if len({n.lower() for n in out.values()}) != len(out):  # a hashed name equal to an existing one: astronomically rare
        raise DataError("could not give the source's files distinct names; rename the files that differ only by '__' or case")
    return out


# ---------------------------------------------------------------------------------------------
# The stage


@dataclass
class DownloadResult:
    source: str
    images: list[Path]
    manifest: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """Network and archive limits (params data.timeout_s, deadline_s, max_download_mb, max_expanded_mb)."""

    timeout_s: float = TIMEOUT_S
    deadline_s: float = DEADLINE_S
    max_download_mb: float = MAX_DOWNLOAD_MB
    max_expanded_mb: float = MAX_EXPANDED_MB

    @classmethod
    def of(cls, data) -> "Limits":
        return cls(**{k: getattr(data, k) for k in cls.__dataclass_fields__ if hasattr(data, k)})

    def net(self) -> dict:
        return {"timeout_s": self.timeout_s, "deadline_s": self.deadline_s, "max_mb": self.max_download_mb}


def _id_filter(id_range):
    if id_range in ([], None, ()):
        return lambda stem: True
    if not (isinstance(id_range, (list, tuple)) and len(id_range) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in id_range) and id_range[0] <= id_range[1]):
        raise ParamError("data.pypi.id_range", id_range, "[lo, hi] integers with lo <= hi (generation one: [1, 151]), or [] for all")
    lo, hi = id_range
    return lambda stem: stem.isdigit() and lo <= int(stem) <= hi


def _names_table(raw: bytes, member: str, stems: list[str]) -> dict[str, str]:
    key = "data.pypi.names"
    try:
        table = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"params.yaml: {key} = {member!r} is not valid JSON ({e})") from None
    if not isinstance(table, dict):
        raise DataError(f"params.yaml: {key} = {member!r} must be a JSON object id -> {{\"name\": ...}}, got {type(table).__name__}")
    out = {}
    for s in stems:
        entry = table.get(s)
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            out[s] = entry["name"][:200]
    return out


def _from_pypi(data, images_dir: Path, limits: Limits) -> tuple[list[Path], dict]:
    pypi = data.pypi
    keep = _id_filter(list(pypi.id_range))
    archive = fetch_pypi(pypi.package, pypi.sha256, **limits.net())
    names = list_archive(archive, limits.max_expanded_mb)

    def id_key(n):
        stem = PurePosixPath(n).stem
        return (not stem.isdigit(), int(stem) if stem.isdigit() else 0, n)

    selected = sorted((n for n in names if fnmatch.fnmatch(n, pypi.members) and keep(PurePosixPath(n).stem)), key=id_key)
    if not selected:
        raise DataError(f"no archive entry of {archive.name} matches data.pypi.members={pypi.members!r} within data.pypi.id_range")
    flat = flat_names(selected, flatten=lambda n: PurePosixPath(n).name)
    id_names = {}
    if pypi.names:  # read and check before extracting: a bad table fails fast
        id_names = _names_table(read_member(archive, pypi.names), pypi.names, [PurePosixPath(flat[n]).stem for n in selected])
    paths = extract_members(archive, selected, images_dir, rename=flat.__getitem__, max_expanded_mb=limits.max_expanded_mb)
    return paths, {"package": pypi.package, "sha256": pypi.sha256, "archive": archive.name, "names": id_names}


def _from_url(data, images_dir: Path, limits: Limits) -> tuple[list[Path], dict]:
    archive = fetch_url(data.url, data.url_sha256, **limits.net())
    selected = sorted(n for n in list_archive(archive, limits.max_expanded_mb) if _is_image(n) and not PurePosixPath(n).name.startswith("."))
    if not selected:
        raise DataError(f"{archive.name} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    flat = flat_names(selected)
    paths = extract_members(archive, selected, images_dir, rename=flat.__getitem__, max_expanded_mb=limits.max_expanded_mb)
    return paths, {"url": data.url, "sha256": data.url_sha256, "archive": archive.name}


def _within(a: Path, b: Path) -> bool:
    """a == b or a lies inside b (both resolved)."""
    return a == b or b in a.parents


def _scan_folder(folder: Path) -> tuple[list[str], dict[str, str]]:
    """Image files under `folder` (relative POSIX paths, sorted) and the entries skipped, with why.

    Symbolic links are followed only to regular files inside the folder; links pointing outside it,
    to folders, or dangling are skipped and counted, so nothing outside the folder is ever copied.
    """
    root = folder.resolve()
    found, skipped = [], {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        for sub in list(dirnames):
            if (d / sub).is_symlink():
                skipped[(d / sub).relative_to(root).as_posix() + "/"] = "symbolic link to a folder (not followed)"
        for fn in filenames:
            p = d / fn
            rel = p.relative_to(root).as_posix()
            if not _is_image(fn):
                continue
            if p.is_symlink():
                target = p.resolve()
                if not _within(target, root):
                    skipped[rel] = "symbolic link to a file outside the source folder (not copied)"
                    continue
                if not target.is_file():
                    skipped[rel] = "symbolic link to something that is not a regular file"
                    continue
            elif not p.is_file():
                skipped[rel] = "not a regular file"
                continue
            found.append(rel)
    return sorted(found), skipped


def check_folder(folder: str, out_dir: Path) -> Path:
    """data.folder must exist and be neither inside, nor equal to, nor containing the output folder."""
    if not folder or not Path(folder).is_dir():
        raise ParamError("data.folder", folder, "an existing folder of images (searched recursively)")
    src, out = Path(folder).resolve(), Path(out_dir).resolve()
    if _within(src, out) or _within(out, src):
        raise ParamError("data.folder", folder, f"a folder that is neither inside, nor equal to, nor containing the output folder {out_dir}")
    return Path(folder)


def _from_folder(data, images_dir: Path, limits: Limits, out_dir: Path) -> tuple[list[Path], dict]:
    folder = check_folder(data.folder, out_dir)
    src = folder.resolve()
    rels, skipped = _scan_folder(folder)
    if not rels:
        raise DataError(f"{folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    flat = flat_names(rels)
    images_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for rel in tqdm(rels, desc=f"copy {folder}", unit="file", disable=None):
        target = images_dir / flat[rel]
        try:
            with open(src / rel, "rb") as f, open(target, "xb") as o:
                shutil.copyfileobj(f, o, 1 << 20)
        except OSError as e:
            target.unlink(missing_ok=True)
            skipped[rel] = f"unreadable ({type(e).__name__}: {e.strerror or e})"
            continue
        paths.append(target)
    return paths, {"folder": str(folder), "skipped": skipped}


def _from_preset(data, images_dir: Path, limits: Limits) -> tuple[list[Path], dict]:
    """cifar10 | mnist | fashion_mnist | flowers102: the official files through `fetch_url`, parsed by data.presets."""
    files, opt = getattr(data, data.source), data.preset
    res = presets.fetch_preset(data.source, files.url, dict(files.sha256), list(opt.splits), list(opt.classes), opt.max_images, images_dir,
                               fetch=lambda url, sha: fetch_url(url, sha, key=f"data.{data.source}", **limits.net()),
                               max_expanded_bytes=int(limits.max_expanded_mb * MB))
    return res.paths, res.manifest


FILLERS = {"pypi": _from_pypi, "url": _from_url, "folder": _from_folder, **dict.fromkeys(presets.PRESETS, _from_preset)}


def is_own_output(out_dir: Path) -> bool:
    """True if `out_dir` is exactly what this stage writes: manifest.json + images/ holding only manifest files."""
    try:
        entries = {p.name for p in out_dir.iterdir()}
        if not entries:
            return True
        manifest = json.loads((out_dir / "manifest.json").read_text())
        listed = set(manifest["files"]) if isinstance(manifest, dict) and "source" in manifest else None
        images = out_dir / "images"
        return (listed is not None and entries <= {"manifest.json", "images"} and (not images.exists() or
                (images.is_dir() and not images.is_symlink() and {p.name for p in images.iterdir()} <= listed)))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise DataError(f"output {out_dir} exists and is not a folder this stage wrote; move it away or choose another --out")
    if out_dir.exists() and not is_own_output(out_dir):
        raise DataError(f"output {out_dir} holds files this stage did not write (no matching manifest.json); "
                        "nothing was deleted: move them away or choose an empty --out")


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace `out_dir` (a previous output of this stage, checked) by `staging` with renames only."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.rmdir(old)
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    if old is not None:
        shutil.rmtree(old)  # our own previous output, checked by is_own_output before anything ran


def run_download(params, out_dir: Path) -> DownloadResult:
    """Fetch the configured source into `out_dir/images` and write `out_dir/manifest.json`.

    `params`: the validated `Params` (or its `data` section). Order: validate params and the
    output folder, fill a fresh temporary folder beside `out_dir`, then swap it in. On failure
    the temporary folder is removed and `out_dir` is exactly as before.
    """
    data = getattr(params, "data", params)
    source = data.source
    if source not in SOURCES:
        raise ParamError("data.source", source, f"one of {', '.join(SOURCES)}")
    limits = Limits.of(data)
    if source == "url":  # validate everything before the first byte is written
        check_url(data.url, "data.url")
        _check_sha("data.url_sha256", data.url_sha256)
    elif source == "pypi":
        parse_spec(data.pypi.package)
        _check_sha("data.pypi.sha256", data.pypi.sha256)
        _id_filter(list(data.pypi.id_range))
    out_dir = Path(out_dir)
    if source == "folder":
        check_folder(data.folder, out_dir)
    _check_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.new-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700; the output gets the usual permissions
    try:
        images_dir = staging / "images"
        fill = FILLERS[source]
        paths, extra = fill(data, images_dir, limits, out_dir) if source == "folder" else fill(data, images_dir, limits)
        final = [out_dir / "images" / p.name for p in paths]
        manifest = {"source": source, **extra, "count": len(paths), "files": {p.name: sha256_file(p) for p in paths}}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        _check_out_dir(out_dir)  # again: nothing may have appeared there while we worked
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # our own temporary folder only
        raise
    return DownloadResult(source, sorted(final), manifest)

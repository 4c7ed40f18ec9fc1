#!/usr/bin/env bash
# Fill .whl/ and .gpu/ for scripts/device_check.sh (run here, where the package registry is reachable):
# Python 3.12 manylinux wheels of what the GPU machine's image lacks (its python3 has torch, numpy, scipy,
# pandas, matplotlib, pyyaml, tqdm, pillow, pytest, huggingface_hub, ...; not dvc, dvclive, pydantic,
# diffusers, hydra), and the 1,008 artworks of the pokemon==0.36 sdist (checked by sha256). Both paths are
# listed in .git/info/exclude; together with the tree they stay under the device tool's 64 MiB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for p in /.whl/ /.gpu/; do grep -qx "$p" .git/info/exclude || echo "$p" >>.git/info/exclude; done
mkdir -p .whl .gpu
# the versions are requirements.lock's; left out are the packages the machine's image already has (KINDS.md's
# list, read 2026-11; its own versions are used) and httpcore2/httpx2 (needs of the lock's huggingface_hub 2.x only)
ON_IMAGE="aiohappyeyeballs aiohttp aiosignal anyio attrs certifi charset-normalizer click colorama contourpy cycler
filelock fonttools frozenlist fsspec h11 hf-xet huggingface-hub idna iniconfig jinja2 kiwisolver markdown-it-py
markupsafe matplotlib mdurl mpmath multidict networkx numpy packaging pandas pathspec pillow pluggy propcache psutil
pygments pyparsing pytest python-dateutil pyyaml regex requests rich safetensors scipy six sympy tabulate torch
torchvision tqdm triton typing-extensions urllib3 yarl zipp httpcore2 httpx2"
PKGS=$(ON_IMAGE="$ON_IMAGE" python3 - <<'PY'
import os, re
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
skip = set(os.environ["ON_IMAGE"].split())
for line in open("requirements.lock"):
    name = line.split("==")[0].strip()
    if "==" in line and not line.startswith("#") and norm(name) not in skip and not re.match(r"(nvidia|cuda)-", norm(name)):
        print(line.split(";")[0].split()[0])
PY
)
for p in $PKGS; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "$p" \
  || python3 -m pip wheel -q --no-deps -w .whl "$p"  # no wheel published (antlr4-python3-runtime): built here, pure Python
done
if [ ! -d .gpu/pokemon ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" pokemon==0.36
  echo "20f95b9037b197bda02269547fe90c19689df96a2383e68097a44c279a6dc1ce  $tmp/pokemon-0.36.tar.gz" | sha256sum -c -
  tar xzf "$tmp/pokemon-0.36.tar.gz" -C "$tmp" && mv "$tmp/pokemon-0.36/pokemon/database/images" .gpu/pokemon && rm -rf "$tmp"
fi
du -sh .whl .gpu

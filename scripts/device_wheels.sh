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
PKGS="aiohttp-retry==2.9.1 amqp==5.4.2 annotated-types==0.8.0 appdirs==1.4.4 asyncssh==2.24.1 atpublic==9.0.0
billiard==4.3.2 celery==5.7.0 cffi==2.1.1 click-didyoumean==0.3.1 click-plugins==1.1.1.2 click-repl==0.4.1
configobj==5.0.9 cryptography==50.0.2 dictdiffer==0.10.0 diffusers==0.42.1 diskcache==5.6.3 distro==1.9.0
dpath==2.2.0 dulwich==1.2.21 dvc==3.67.1 dvc-data==3.18.3 dvc-http==2.32.0 dvc-objects==5.2.0 dvc-render==1.0.2
dvc-studio-client==0.23.0 dvc-task==0.40.2 dvclive==3.49.1 entrypoints==0.4.2 flatten-dict==0.5.0 flufl.lock==9.2.0
funcy==2.1 gitdb==4.0.12 GitPython==3.2.1 grandalf==0.8 gto==1.10.1 hydra-core==1.3.8 importlib_metadata==10.2.0
iterative-telemetry==0.0.10 kombu==5.7.0 lazy-importer==0.1.0 omegaconf==2.3.1 orjson==3.13.0 platformdirs==4.14.7
prompt_toolkit==3.0.53 pycparser==3.12 pydantic==2.14.3 pydantic-settings==2.16.3 pydantic_core==2.50.4 pydot==4.0.1
pygit2==1.21.0 pygtrie==2.6.2 python-dotenv==1.2.4 ruamel.yaml==0.19.1 scmrepo==3.6.2 semver==3.1.1 shortuuid==1.0.13
shtab==1.13.0 smmap==5.0.3 sqltrie==0.11.3 tomlkit==0.15.2 torch_fidelity==0.4.0 truststore==0.10.5
typing-inspection==0.4.5 tzlocal==5.4.5 vine==5.1.0 voluptuous==0.16.0 wcwidth==0.9.4 zc.lockfile==4.0"
for p in $PKGS; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "$p"
done
# `dvc exp run -S` parses overrides with hydra, whose omegaconf needs antlr4's runtime: an sdist only, built here
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
if [ ! -d .gpu/pokemon ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" pokemon==0.36
  echo "20f95b9037b197bda02269547fe90c19689df96a2383e68097a44c279a6dc1ce  $tmp/pokemon-0.36.tar.gz" | sha256sum -c -
  tar xzf "$tmp/pokemon-0.36.tar.gz" -C "$tmp" && mv "$tmp/pokemon-0.36/pokemon/database/images" .gpu/pokemon && rm -rf "$tmp"
fi
du -sh .whl .gpu

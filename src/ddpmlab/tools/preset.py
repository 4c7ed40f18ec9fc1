"""Run an experiment from a preset: a YAML file of params.yaml overrides, applied by `dvc exp run --set-param`.

    ddpmlab preset presets/gpu.yaml                  # the GPU preset as experiment "gpu"
    ddpmlab preset presets/gpu.yaml sample           # only up to the samples
    ddpmlab preset presets/mnist.yaml -n digits -S train.epochs=60   # later -S win
    ddpmlab preset presets/smoke.yaml --print        # the dvc command, not run

A preset has the shape of params.yaml and holds only what it changes. Every key must exist in
params.yaml and the merged params must pass the schema: both are checked before dvc starts. Each leaf
becomes one `-S key=value`, so `dvc exp show` lists the experiment's params like any other, and a copy
of the file (or a single -S after it) is all it takes to vary one. Run again without -n, a preset becomes
NAME-2, NAME-3, ...: the earlier experiment is kept.
Exit 0: the experiment ran; 2: a bad preset or params file (one line naming the key); otherwise dvc's exit code.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from ddpmlab.core.errors import UserError
from ddpmlab.pipeline.command import BAD_INPUT, stage_parser
from ddpmlab.pipeline.command import (
    command as as_command,  # this module's own `command` builds the dvc command
)
from ddpmlab.pipeline.schema import ParamsError, read_yaml, validate


class PresetError(UserError):
    """A preset file that cannot be applied; str(e) is one line naming the file and the key."""


def read_preset(path: Path) -> dict:
    """The preset's mapping, read as params.yaml is (a key given twice is refused, naming it and its lines)."""
    if not path.is_file():
        raise PresetError(f"{path}: no such preset file")
    try:
        data = read_yaml(path)
    except ParamsError as e:
        raise PresetError(str(e)) from None
    if not isinstance(data, dict) or not data:
        raise PresetError(f"{path}: a preset is a non-empty mapping shaped like params.yaml (section: {{key: value}})")
    return data


def overrides(preset: dict, base: dict, source: str, prefix: str = "") -> dict[str, object]:
    """The preset's leaves as dotted keys -> values; every key must exist in `base` (params.yaml)."""
    out = {}
    for key, value in preset.items():
        dotted = f"{prefix}{key}"
        if not isinstance(base, dict) or key not in base:
            allowed = ", ".join(sorted(map(str, base))) if isinstance(base, dict) else "(none: this is a value)"
            raise PresetError(f"{source}: {dotted} is not a params.yaml key; allowed here: {allowed}")
        if isinstance(value, dict) and isinstance(base[key], dict):
            out.update(overrides(value, base[key], source, dotted + "."))
        else:
            out[dotted] = value
    return out


def apply(base: dict, sets: dict[str, object]) -> dict:
    """A copy of `base` with the dotted keys set (what `dvc exp run -S` does to params.yaml)."""
    merged = json.loads(json.dumps(base))
    for dotted, value in sets.items():
        *parents, leaf = dotted.split(".")
        node = merged
        for k in parents:
            node = node[k]
        node[leaf] = value
    return merged


def set_params(sets: dict[str, object]) -> list[str]:
    """`-S key=value` per leaf; values in JSON, which dvc parses as the YAML they are (strings stay strings)."""
    return [arg for dotted, value in sets.items() for arg in ("-S", f"{dotted}={json.dumps(value)}")]


def command(preset_path: Path, params_path: Path, name: str | None, extra: list[str]) -> list[str]:
    """The `dvc exp run` command of a preset, after checking it against params.yaml and the schema."""
    base = read_yaml(params_path)
    sets = overrides(read_preset(preset_path), base, str(preset_path))
    try:
        validate(apply(base, sets))
    except ParamsError as e:
        raise PresetError(f"{preset_path} applied to {params_path}: {e}") from None
    return ["dvc", "exp", "run", "-n", name or preset_path.stem, *set_params(sets), *extra]


def free_name(name: str, taken: set[str]) -> str:
    """`name`, or the first of name-2, name-3, ... that no experiment of this commit has yet."""
    k, out = 2, name
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    return out


def experiment_names() -> set[str]:
    """Names of the experiments based on HEAD (`dvc exp list --name-only`); empty when there are none or dvc cannot say."""
    p = subprocess.run(["dvc", "exp", "list", "--name-only"], capture_output=True, text=True)
    return set(p.stdout.split()) if p.returncode == 0 else set()


@as_command("preset")
def main(argv=None) -> int:
    ap = stage_parser(__doc__, prog="ddpmlab preset", formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", type=Path, help="a preset file (presets/*.yaml)")
    ap.add_argument("-n", "--name", help="experiment name (default: the file's name without .yaml)")
    ap.add_argument("--print", action="store_true", help="print the dvc command instead of running it")
    args, extra = ap.parse_known_args(argv)
    try:
        cmd = command(args.preset, Path(args.params), args.name, extra)
    except (PresetError, ParamsError) as e:
        print(f"preset: {e}", file=sys.stderr)
        return BAD_INPUT
    if args.print:
        print(shlex.join(cmd))
        return 0
    if shutil.which("dvc") is None:
        print("preset: dvc is not on PATH; run `source scripts/env.sh` first (it sets up the pinned environment)", file=sys.stderr)
        return BAD_INPUT
    if args.name is None:  # a rerun of the same preset is a new experiment, never a clash with (or loss of) the last one
        name = free_name(cmd[4], experiment_names())
        if name != cmd[4]:
            print(f"preset: an experiment {cmd[4]!r} exists already; this one is {name!r} (-n NAME to choose)", flush=True)
            cmd[4] = name
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())

"""Paths are written once, in dvc.yaml; the report and the comparison look them up here.

A stage's outputs are its `outs`, `metrics` and `plots` entries (a plain path or a one-key mapping
`{path: {options}}`). Readers name what they need by (stage, file name), e.g. ("sample", "grid.png"):
the file name is what the stage script writes, the folder is dvc.yaml's.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import yaml

from ddpmlab.core.errors import UserError

OUTPUT_KINDS = ("outs", "metrics", "plots")


class DvcYamlError(UserError, ValueError):
    """dvc.yaml lacks something a reader needs; str(e) is one line naming it."""


def load(path: str | Path = "dvc.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise DvcYamlError(f"{path}: not found; run from the repository root (or pass --dvc-yaml)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data.get("stages"), dict):
        raise DvcYamlError(f"{path}: no `stages:` mapping")
    return data


def _path(entry) -> str:
    return next(iter(entry)) if isinstance(entry, dict) else str(entry)


def outputs(dvc: dict, stage: str) -> list[str]:
    """Every path `stage` writes (outs, metrics, plots), in dvc.yaml's order."""
    s = dvc["stages"].get(stage)
    if s is None:
        raise DvcYamlError(f"dvc.yaml has no stage {stage!r}; stages: {', '.join(dvc['stages'])}")
    return [_path(e) for kind in OUTPUT_KINDS for e in s.get(kind) or []]


def json_outputs(dvc: dict) -> tuple[list[str], list[str]]:
    """(the pipeline's `metrics:` files, every other .json a stage writes): the headline and the diagnostics."""
    headline, other = [], []
    for name, s in dvc["stages"].items():
        for kind in OUTPUT_KINDS:
            for e in s.get(kind) or []:
                p = _path(e)
                if p.endswith(".json"):
                    (headline if kind == "metrics" else other).append(p)
    return headline, other


def producers(dvc: dict) -> dict[str, str]:
    """output path -> the stage that writes it."""
    return {p: name for name in dvc["stages"] for p in outputs(dvc, name)}


def output(dvc: dict, stage: str, name: str) -> str:
    """The path of `stage`'s output whose file name is `name`."""
    outs = outputs(dvc, stage)
    for p in outs:
        if PurePosixPath(p).name == name:
            return p
    raise DvcYamlError(f"dvc.yaml: stage {stage!r} declares no output {name!r}; its outputs: {', '.join(outs)}")


def live_series(dvc: dict, stage: str, metric: str) -> str:
    """The .tsv that dvclive writes for `metric` (e.g. "val/loss") inside `stage`'s dvclive folder (<dir>/plots/metrics)."""
    folders = [p for p in outputs(dvc, stage) if PurePosixPath(p).parts[-2:] == ("plots", "metrics")]
    if len(folders) != 1:
        raise DvcYamlError(f"dvc.yaml: stage {stage!r} should have exactly one dvclive folder (.../plots/metrics), found {folders}")
    return f"{folders[0]}/{metric}.tsv"


def stage_inputs(dvc: dict, stage: str, wanted: dict[str, tuple[str, str]]) -> dict[str, Path]:
    """Resolve `wanted` (key -> (producing stage, file name)) against `stage`'s deps in dvc.yaml.

    Each wanted file must be an output of its producer *and* a dep of `stage` (else DVC would not
    rerun `stage` when it changes); every dep that is another stage's output must be wanted (no
    stale deps). Either mismatch is one DvcYamlError line."""
    deps = [str(d) for d in dvc["stages"][stage].get("deps") or []]
    found = {}
    for key, (producer, name) in wanted.items():
        p = output(dvc, producer, name)
        if p not in deps:
            raise DvcYamlError(f"dvc.yaml: stage {stage!r} reads {p} ({producer}'s {name}) but does not list it under deps")
        found[key] = Path(p)
    made = producers(dvc)
    stale = [d for d in deps if d in made and Path(d) not in found.values() and made[d] != stage]
    if stale:
        raise DvcYamlError(f"dvc.yaml: stage {stage!r} lists deps it does not read: {', '.join(stale)}")
    return found

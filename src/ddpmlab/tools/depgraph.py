"""Check the package's layers, and check (or --write) dvc.yaml's `src/` deps against each stage's import closure.

    python -m ddpmlab.tools.depgraph            # exit 1 and what is wrong: a wrong-way import, or stale deps
    python -m ddpmlab.tools.depgraph --write    # rewrite stale deps in place

The layers, each a folder of src/ddpmlab: `core` imports nothing outside core; `pipeline` never imports
`tools`; nothing but tests and `ddpmlab/__main__.py` (the `ddpmlab` command) imports `tools`;
`stages/<name>.py` is a door to `ddpmlab.pipeline.stages.<name>` alone; and the train stage's closure holds no figure code, so a plot tweak never retrains.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ddpmlab.core.files import write_text
from ddpmlab.pipeline.imports import imports_of, module_closure

LAYERS = ("core", "pipeline", "tools")
# who may import whom (a layer always imports itself; ddpmlab/__init__.py belongs to no layer)
ALLOWED = {"core": {"core"}, "pipeline": {"core", "pipeline"}, "tools": {"core", "pipeline", "tools"}}
FIGURE_MODULES = ("matplotlib",)  # a module importing one of these draws figures


def _layer(path: Path, src: Path) -> str | None:
    parts = path.relative_to(src).parts  # ("ddpmlab", "core", "schedule.py")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def draws_figures(path: Path) -> bool:
    """The file imports matplotlib (directly, lazily or not)."""
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    return any(m == f or m.startswith(f + ".") for m in names for f in FIGURE_MODULES)


def layer_violations(root: Path) -> list[str]:
    """Every import that runs the wrong way in the checkout at `root` (src/ddpmlab and stages/), one line each."""
    src, out = (root / "src").resolve(), []
    pkg = src / "ddpmlab"
    for f in sorted(pkg.rglob("*.py")):
        here = _layer(f, src)
        for g in sorted(imports_of(f, src)):
            there = _layer(g, src)
            if there is None:
                continue
            rel = f.relative_to(root.resolve()).as_posix()
            if here is None and f == pkg / "__main__.py" and there == "tools":
                continue  # `python -m ddpmlab`, the console command's other door, runs tools.cli
            if here is None:
                out.append(f"{rel} (outside the layers) imports {there}: {g.relative_to(src).as_posix()}")
            elif there not in ALLOWED[here]:
                out.append(f"{rel} ({here}) imports {there}: {g.relative_to(src).as_posix()}")
    for door in sorted((root / "stages").glob("*.py")):
        want = {pkg / "__init__.py", pkg / "pipeline" / "__init__.py", pkg / "pipeline" / "stages" / "__init__.py",
                pkg / "pipeline" / "stages" / door.name}
        got = imports_of(door.resolve(), src)
        if got != want:
            extra = sorted(g.relative_to(src).as_posix() for g in got - want)
            out.append(f"stages/{door.name} should import ddpmlab.pipeline.stages.{door.stem} alone; it imports {extra or 'nothing of it'}")
    train = root / "stages" / "train.py"
    if train.is_file():
        for g in module_closure(train, src):
            if draws_figures(g):
                out.append(f"stages/train.py reaches figure code: {g.relative_to(src).as_posix()} (a plot tweak would retrain)")
    return out


def sync_dvc_yaml(root: Path, write: bool = False) -> dict[str, tuple[list[str], list[str]]]:
    """Compare (and with write=True rewrite) the `src/` deps of every stage in dvc.yaml with the import
    closure of `stages/<name>.py`. Returns {stage: (missing, extra)} for stages that differ."""
    text = (root / "dvc.yaml").read_text()
    out, diffs, stage = [], {}, None
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^  (\w+):\s*$", line)
        if m:
            stage = m.group(1)
        m = re.match(r"^(\s+)- src/ddpmlab/", line)
        if m and stage:
            indent, listed = m.group(1), []
            while i < len(lines) and re.match(r"^\s+- src/ddpmlab/", lines[i]):
                listed.append(lines[i].strip()[2:])
                i += 1
            script = (root / "stages" / f"{stage}.py").resolve()
            needed = [p.relative_to(root).as_posix() for p in module_closure(script, root / "src")]
            if set(listed) != set(needed):
                diffs[stage] = (sorted(set(needed) - set(listed)), sorted(set(listed) - set(needed)))
            out.extend(f"{indent}- {d}\n" for d in needed)
            continue
        out.append(line)
        i += 1
    if write:
        write_text(root / "dvc.yaml", "".join(out))
    return diffs


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ddpmlab.tools.depgraph", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="rewrite the src/ddpmlab deps of every stage in place")
    ap.add_argument("--root", type=Path, default=Path("."))
    a = ap.parse_args()
    a.root = a.root.resolve()
    wrong = layer_violations(a.root)
    for line in wrong:
        print(f"layers: {line}")
    d = sync_dvc_yaml(a.root, a.write)
    for s, (missing, extra) in d.items():
        print(f"{s}: missing {missing}, not imported {extra}")
    raise SystemExit(1 if wrong or (d and not a.write) else 0)

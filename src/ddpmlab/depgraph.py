"""Which `ddpmlab` files a script imports, transitively (static, via ast).

One import closure serves two readers: the test that keeps dvc.yaml truthful (every stage lists
exactly these files in its `deps`, so editing a module reruns every stage whose result it can
change) and the training resume key (`training.state.code_fingerprint`), so a code change that
can alter a run never resumes into the old one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = "ddpmlab"


def _module_file(dotted: str, src: Path) -> Path | None:
    """src/ddpmlab/a/b.py or src/ddpmlab/a/b/__init__.py for 'ddpmlab.a.b'; None if neither exists."""
    base = src.joinpath(*dotted.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _dotted(path: Path, src: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path, src: Path) -> set[Path]:
    """Package files imported by one file: the modules named and the __init__.py of every package on the way."""
    tree = ast.parse(path.read_text())
    inside = src in path.parents
    here = _dotted(path, src) if inside else ""
    here_pkg = here if path.name == "__init__.py" else here.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level and inside:  # relative: resolve against this file's package
                base = here_pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import submodule`
    found = set()
    for name in names:
        if name != PKG and not name.startswith(PKG + "."):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # every package __init__ on the way, then the module itself
            f = _module_file(".".join(parts[:i]), src)
            if f is not None:
                found.add(f)
    return found


def module_closure(script: Path, src: Path) -> list[Path]:
    """Sorted package files a script needs, transitively (`src` is the folder holding `ddpmlab/`)."""
    src = src.resolve()
    todo, seen = list(_imports(script.resolve(), src)), set()
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(_imports(f, src) - seen)
    return sorted(seen)


def sync_dvc_yaml(root: Path, write: bool = False) -> dict[str, tuple[list[str], list[str]]]:
    """Compare (and with write=True rewrite) the `src/` deps of every stage in dvc.yaml with the import
    closure of `stages/<name>.py`. Returns {stage: (missing, extra)} for stages that differ."""
    import re

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
        (root / "dvc.yaml").write_text("".join(out))
    return diffs


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Check (or --write) dvc.yaml's src/ deps against each stage's import closure.")
    ap.add_argument("--write", action="store_true", help="rewrite the src/ddpmlab deps of every stage in place")
    ap.add_argument("--root", type=Path, default=Path("."))
    a = ap.parse_args()
    a.root = a.root.resolve()
    d = sync_dvc_yaml(a.root, a.write)
    for s, (missing, extra) in d.items():
        print(f"{s}: missing {missing}, not imported {extra}")
    raise SystemExit(1 if d and not a.write else 0)

"""Which `ddpmlab` modules a stage script imports, transitively (static, via ast).

Used by the test that keeps dvc.yaml truthful: every stage must list exactly these files in
its `deps`, so editing a module reruns every stage whose result it can change.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = "ddpmlab"


def _imports(path: Path, pkg_dir: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    in_pkg = path.parent == pkg_dir
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(PKG + ".")}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1 and in_pkg:  # from .x import y / from . import x
                found |= {mod.split(".")[0]} if mod else {a.name for a in node.names}
            elif mod == PKG:
                found |= {a.name for a in node.names}
            elif mod.startswith(PKG + "."):
                found.add(mod.split(".")[1])
    return {m for m in found if (pkg_dir / f"{m}.py").is_file()}


def module_closure(script: Path, pkg_dir: Path) -> list[Path]:
    """Sorted package files a script needs, __init__.py included."""
    todo, seen = list(_imports(script, pkg_dir)), set()
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(_imports(pkg_dir / f"{m}.py", pkg_dir) - seen)
    return sorted([pkg_dir / "__init__.py"] + [pkg_dir / f"{m}.py" for m in seen])

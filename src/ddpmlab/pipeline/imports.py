"""Which `ddpmlab` files a script imports, transitively (static, via ast), and the hash of that code.

One import closure serves two readers: dvc.yaml's `deps` (every stage lists exactly these files, so
editing a module reruns every stage whose result it can change; `python -m ddpmlab.tools.depgraph`
checks and rewrites them) and the training resume key (`code_fingerprint`), so a code change that
can alter a run never resumes into the old one.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PKG = "ddpmlab"
SRC = Path(__file__).resolve().parents[2]  # the folder holding ddpmlab/


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


def imports_of(path: Path, src: Path) -> set[Path]:
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
    todo, seen = list(imports_of(script.resolve(), src)), set()
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(imports_of(f, src) - seen)
    return sorted(seen)



def default_entry() -> Path:
    """stages/train.py of this checkout (what `dvc repro` runs); the train stage module if the package is installed elsewhere."""
    script = SRC.parent / "stages" / "train.py"
    return script if script.is_file() else Path(__file__).with_name("stages") / "train.py"


def code_files(entry: Path | None = None, src: Path = SRC) -> list[Path]:
    """The entry script and every package file it imports, transitively (dvc.yaml's train deps)."""
    entry = Path(entry or default_entry()).resolve()
    return sorted(set(module_closure(entry, src)) | {entry})


def code_fingerprint(entry: Path | None = None, src: Path = SRC) -> str:
    """sha256 over the (relative path, bytes) of every file in `code_files`."""
    src = Path(src).resolve()
    root = src.parent
    h = hashlib.sha256()
    for f in code_files(entry, src):
        h.update((f.relative_to(root).as_posix() if root in f.parents else f.name).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()

"""Crash-safe outputs: every file is written through core.files.atomic_path. A stage killed while writing
leaves the previous complete file (never a truncated one under the final name), the next run cleans the
temporary file up, and a file-system error is one line naming the path, with nothing partial left behind."""

import ast
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from ddpmlab.core.files import PARTIAL, OutputError, atomic_path, partial_files, write_text

from .conftest import blob_images, committed_params_text

ROOT = Path(__file__).resolve().parents[1]


def test_success_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "a" / "m.json"
    write_text(p, "old")
    with atomic_path(p) as tmp:
        assert tmp.parent == p.parent and tmp.suffix == ".json" and tmp != p
        tmp.write_text("new")
        assert p.read_text() == "old"  # not replaced before the writer is done
    assert p.read_text() == "new" and list(p.parent.iterdir()) == [p]


def test_an_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    p = tmp_path / "m.npz"
    np.savez_compressed(p, x=np.arange(3))
    before = p.read_bytes()
    with pytest.raises(ZeroDivisionError):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half")
            1 / 0
    assert p.read_bytes() == before and list(tmp_path.iterdir()) == [p]


def test_stale_temporaries_of_a_killed_run_are_removed_by_the_next_write(tmp_path):
    p = tmp_path / "grid.png"
    stale = tmp_path / f".grid.0badc0de{PARTIAL}.png"
    other = tmp_path / f".other.0badc0de{PARTIAL}.png"  # another file's: not ours to remove
    stale.write_bytes(b"x")
    other.write_bytes(b"x")
    assert partial_files(p) == [stale]
    write_text(p, "new")
    assert not stale.exists() and other.exists() and p.read_text() == "new"


def test_file_system_errors_are_one_line_naming_the_path(tmp_path):
    folder = tmp_path / "metrics.json"
    folder.mkdir()  # the target is a folder
    with pytest.raises(OutputError, match=r"^cannot write .*metrics\.json: ") as e:
        write_text(folder, "{}")
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == [folder]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=r"cannot write .*file/x\.json"):
        write_text(blocker / "x.json", "{}")  # a path through a file


# --- every writer goes through atomic_path -------------------------------------------------------------

WRITERS = {"write_text", "write_bytes", "savez", "savez_compressed", "savefig", "to_csv", "save"}
# files that write without atomic_path, and why that is safe
ALLOWED = {
    "src/ddpmlab/pipeline/data/download.py": "writes into its own staging folder, swapped in whole; the cache by os.replace",
    "src/ddpmlab/pipeline/data/presets.py": "writes into the download stage's staging folder",
    "src/ddpmlab/core/fid.py": "a throwaway file in a temporary directory",
    "src/ddpmlab/core/checkpoint.py": "torch.save into memory (checkpoint_bytes); the file goes through write_bytes",
}


def _unsafe_writes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []

    def visit(node, inside: bool):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            inside = inside or any(isinstance(i.context_expr, ast.Call) and getattr(i.context_expr.func, "id", getattr(i.context_expr.func, "attr", None)) == "atomic_path"
                                   for i in node.items)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITERS and not inside:
            receiver = node.func.value
            helper = isinstance(receiver, ast.Name) and receiver.id in ("plotting", "figures")  # pipeline.figures.save: atomic
            if not helper:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.func.attr}(...) outside atomic_path")
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return out


def test_every_writer_is_atomic():
    files = sorted((ROOT / "src").rglob("*.py"))
    bad = [line for f in files if f.relative_to(ROOT).as_posix() not in ALLOWED for line in _unsafe_writes(f)]
    assert bad == [], "\n".join(bad)


def test_the_scan_finds_a_planted_in_place_write(tmp_path):
    f = ROOT / "src" / "ddpmlab" / "pipeline" / "_planted.py"
    f.write_text("def f(p, df):\n    df.to_csv(p)\n")
    try:
        assert _unsafe_writes(f) == ["src/ddpmlab/pipeline/_planted.py:2: .to_csv(...) outside atomic_path"]
    finally:
        f.unlink()


# --- a real stage, killed mid-write -------------------------------------------------------------------

KILLER = textwrap.dedent('''
    """Loaded first (sitecustomize): SIGKILL this process halfway through the first write of a file whose name
    holds KILL_STEM and ends with KILL_SUFFIX, after the half has reached the disk."""
    import builtins, io, os, signal
    stem, suffix = os.environ["KILL_STEM"], os.environ["KILL_SUFFIX"]
    _open = builtins.open

    class _Dying:
        def __init__(self, f):
            self._f = f
        def write(self, data):
            self._f.write(data[: max(1, len(data) // 2)])
            self._f.flush()
            os.fsync(self._f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        def __getattr__(self, name):
            return getattr(self._f, name)
        def __enter__(self):
            return self
        def __exit__(self, *a):
            return self._f.__exit__(*a)

    def dying_open(file, mode="r", *a, **k):
        f = _open(file, mode, *a, **k)
        name = os.path.basename(os.fspath(file)) if isinstance(file, (str, bytes, os.PathLike)) else ""
        if any(c in mode for c in "wax") and stem in name and name.endswith(suffix):
            return _Dying(f)
        return f

    builtins.open = io.open = dying_open
''')


def other_params() -> str:
    """The committed params with another T and other compared T: every output of the schedule stage changes."""
    p = yaml.safe_load(committed_params_text())
    p["T"], p["schedule"]["compare_T"] = 500, [100, 500]
    return yaml.safe_dump(p, sort_keys=False)


def _run_schedule(d: Path, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": os.pathsep.join([str(d / "hook")] * bool(env_extra) + [str(ROOT / "src")]), "PATH": "/usr/bin:/bin",
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(d / "mpl"), **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "stages" / "schedule.py"), "--train", "train.npz", "--out", "out"],
                          cwd=d, env=env, capture_output=True, text=True, **kw)


@pytest.fixture
def schedule_dir(tmp_path):
    ims = np.stack([np.asarray(im.resize((24, 24))) for im in blob_images(8, seed=2)])
    np.savez_compressed(tmp_path / "train.npz", images=ims, names=np.array([f"{i}.png" for i in range(8)]))
    (tmp_path / "params.yaml").write_text(committed_params_text())
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(KILLER)
    r = _run_schedule(tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["metrics.json", "terminal.csv", "sqrt_alpha_bar.png", "forward_process.png"])
def test_a_stage_killed_mid_write_keeps_the_previous_file(schedule_dir, name):
    """json (write_json), csv (pandas), png (matplotlib and Pillow): killed halfway through writing `name`."""
    d = schedule_dir
    target = d / "out" / name
    before = target.read_bytes()
    (d / "params.yaml").write_text(other_params())
    p, s = Path(name).stem, Path(name).suffix
    r = _run_schedule(d, {"KILL_STEM": p, "KILL_SUFFIX": s})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
    assert target.read_bytes() == before  # the previous complete file, not a truncated new one
    assert len(partial_files(target)) == 1  # what the killed run was writing
    r = _run_schedule(d)
    assert r.returncode == 0, r.stderr[-2000:]
    assert partial_files(target) == [] and target.read_bytes() != before


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_nothing_partial(schedule_dir):
    """RLIMIT_FSIZE (what a full disk looks like to a writer: the write fails part way) makes writes beyond 4 KB fail."""
    d = schedule_dir
    before = {p.name: p.read_bytes() for p in (d / "out").iterdir()}
    (d / "params.yaml").write_text(other_params())

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    r = _run_schedule(d, preexec_fn=limit)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0 and "cannot write" in r.stderr, r.stderr
    after = {p.name: p for p in (d / "out").iterdir()}
    assert sorted(after) == sorted(before)  # no temporary file left
    for name, p in after.items():  # each file is the previous one or a complete new one
        if p.read_bytes() != before[name]:
            {".json": lambda q: json.loads(q.read_text()), ".csv": pd.read_csv, ".png": lambda q: Image.open(q).verify()}[p.suffix](p)


def test_a_writers_own_error_is_not_called_a_file_system_error(tmp_path):
    """Pillow's encoder raises a plain OSError (no errno): a bug or a bad image, passed on as it is, not 'cannot write'."""
    with pytest.raises(OSError, match="cannot write mode RGBA as JPEG") as e:
        with atomic_path(tmp_path / "x.jpg") as tmp:
            Image.new("RGBA", (2, 2)).save(tmp)
    assert not isinstance(e.value, OutputError) and list(tmp_path.iterdir()) == []


def test_only_this_targets_temporaries_count_as_its_own(tmp_path):
    mine = tmp_path / f".train_state.0123abcd{PARTIAL}.pt"
    other = tmp_path / f".train_state.5f3a.0123abcd{PARTIAL}.pt"  # the temporary of `train_state.5f3a.pt`
    for p in (mine, other):
        p.write_bytes(b"x")
    assert partial_files(tmp_path / "train_state.pt") == [mine]
    odd = tmp_path / "a[1].json"  # glob metacharacters in the name
    stale = tmp_path / f".a[1].89abcdef{PARTIAL}.json"
    stale.write_bytes(b"x")
    assert partial_files(odd) == [stale]

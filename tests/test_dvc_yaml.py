"""dvc.yaml tells the truth: deps list exactly the modules each stage imports; params keys exist."""

from pathlib import Path

import pytest
import yaml

from ddpmlab.pipeline.imports import module_closure

from .conftest import committed_params

ROOT = Path(__file__).resolve().parents[1]
PIPE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = committed_params()


@pytest.mark.parametrize("name", sorted(PIPE))
def test_stage_deps_are_its_imports(name):
    stage = PIPE[name]
    script = ROOT / "stages" / f"{name}.py"
    assert f"stages/{name}.py" in stage["cmd"] and f"stages/{name}.py" in stage["deps"]
    listed = {d for d in stage["deps"] if d.startswith("src/")}
    needed = {p.relative_to(ROOT).as_posix() for p in module_closure(script, ROOT / "src")}
    assert listed == needed, f"missing: {sorted(needed - listed)}, not imported: {sorted(listed - needed)}"


@pytest.mark.parametrize("name", sorted(PIPE))
def test_stage_params_exist(name):
    for key in PIPE[name].get("params", []):
        node = PARAMS
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{name}: params key {key} is not in params.yaml"
            node = node[part]


def test_T_reruns_exactly_the_T_stages():
    uses_T = {n for n, s in PIPE.items() if any(k == "T" for k in s.get("params", []))}
    assert uses_T == {"schedule", "train", "residuals", "sample", "sweep", "report"}
    # evaluate and memorization rerun through their dependency on the samples; download/prepare never see T
    assert "samples/samples.npz" in PIPE["evaluate"]["deps"] and "samples/samples.npz" in PIPE["memorization"]["deps"]


def test_no_stage_dep_is_an_empty_file():
    """DVC warns "'<file>' is empty" for every empty dependency on every run (about 100 lines per `dvc repro` when
    the package __init__.py files were empty): each source dep carries at least a docstring."""
    empty = sorted({d for st in PIPE.values() for d in st.get("deps", []) if d.endswith(".py") and (ROOT / d).stat().st_size == 0})
    assert not empty, empty


def _outputs_with_options():
    for stage in PIPE.values():
        for kind in ("outs", "metrics", "plots"):
            for e in stage.get(kind) or []:
                yield kind, *(next(iter(e.items())) if isinstance(e, dict) else (e, {}))


def test_metrics_are_the_headline_alone_and_every_report_file_lives_in_git():
    """`metrics:` is one file (the headline); the report, its figures and every JSON under reports/ are non-cached
    outputs, so that a fresh clone shows the latest run and its diagnostics without `dvc pull`."""
    outs = list(_outputs_with_options())
    assert [p for kind, p, _ in outs if kind == "metrics"] == ["reports/metrics.json"]
    cached = [p for _, p, o in outs if p.startswith("reports/") and Path(p).suffix in (".md", ".png", ".gif", ".json", ".csv")
              and (o or {}).get("cache", True)]
    assert cached == [], cached


def test_the_committed_report_shows_without_running_anything():
    """Every picture reports/report.md links is committed, as the report and headline are (a fresh clone renders it)."""
    import subprocess

    tracked = set(subprocess.run(["git", "-C", str(ROOT), "ls-files", "reports"], capture_output=True, text=True, check=True).stdout.split())
    assert {"reports/report.md", "reports/metrics.json"} <= tracked
    report = subprocess.run(["git", "-C", str(ROOT), "show", "HEAD:reports/report.md"], capture_output=True, text=True, check=True).stdout
    links = [part.split("](")[1].split(")")[0] for part in report.split("![")[1:]]
    assert len(links) >= 10
    missing = [link for link in links if f"reports/{link}" not in tracked]
    assert missing == [], missing

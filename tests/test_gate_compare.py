"""The regression gate's rules, the comparison's parsing of `dvc exp show --json`, and how both find files via dvc.yaml."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from ddpmlab.tools.compare import Exp, parse_exp_show, prc_note, select, tables
from ddpmlab.tools.gate import Rule, rules_from_params, run_gate
from ddpmlab.pipeline import dvcyaml
from ddpmlab.pipeline.schema import GateParams, ParamsError, validate

ROOT = Path(__file__).resolve().parents[1]

RULES = rules_from_params(GateParams.model_validate({"baseline": "b.json", "rules": [
    {"metric": "train:val.loss", "better": "lower", "max_worse_pct": 10},
    {"metric": "evaluate:kid", "better": "lower", "max_worse_abs": 0.05},
    {"metric": "memorization:mem_val_pixel_median", "better": "higher", "max_worse_pct": 5},
]}))
BASE = {"train:val.loss": 0.20, "evaluate:kid": 0.10, "memorization:mem_val_pixel_median": 0.3}


def test_within_tolerance_passes():
    assert run_gate(RULES, BASE, {"train:val.loss": 0.219, "evaluate:kid": 0.149, "memorization:mem_val_pixel_median": 0.29}) == []


def test_regression_names_metric_baseline_value_and_tolerance():
    msgs = run_gate(RULES, BASE, {"train:val.loss": 0.25, "evaluate:kid": 0.1, "memorization:mem_val_pixel_median": 0.2})
    assert len(msgs) == 2
    assert msgs[0] == "REGRESSION train:val.loss: 0.25 vs baseline 0.2 is worse by 0.05 (25.0%) (lower is better); tolerance 10%"
    assert "higher is better" in msgs[1]


def test_missing_or_nan_metric_fails_instead_of_passing():
    msgs = run_gate(RULES, BASE, {"train:val.loss": float("nan"), "evaluate:kid": 0.1})
    assert len(msgs) == 2 and all("missing or not a finite number" in m for m in msgs)


def test_both_tolerances_take_the_looser():
    r = Rule("evaluate:kid", "lower", 10, 0.05)
    assert r.check({"evaluate:kid": 0.1}, {"evaluate:kid": 0.149}) is None  # 0.049 <= max(0.01, 0.05)
    assert "tolerance 10% or 0.05 absolute" in r.check({"evaluate:kid": 0.1}, {"evaluate:kid": 0.151})


def test_bad_rule_is_one_line_naming_the_key(params):
    bad = copy.deepcopy(params)
    bad["gate"]["rules"][0]["better"] = "smaller"
    with pytest.raises(ParamsError, match=r"^params.yaml: gate.rules.0.better = 'smaller' is invalid") as e:
        validate(bad)
    assert "\n" not in str(e.value)
    bad["gate"]["rules"][0] = {"metric": "train:val.loss", "better": "lower"}
    with pytest.raises(ParamsError, match="exactly one of max_worse_pct, max_worse_abs"):
        validate(bad)


def test_committed_gate_rules_load(params):
    rules = rules_from_params(validate(params).gate)
    assert rules and all(r.better in ("lower", "higher") for r in rules)


SHOW = [
    {"rev": "workspace", "name": None, "error": None, "experiments": None,
     "data": {"params": {"params.yaml": {"data": {"T": 500, "seed": 0}}}, "metrics": {"reports/evaluate/metrics.json": {"data": {"kid": 0.3}}}}},
    {"rev": "abc1234def", "name": "main", "error": None,
     "data": {"params": {"params.yaml": {"data": {"T": 1000, "seed": 0}}}, "metrics": {"reports/evaluate/metrics.json": {"data": {"kid": 0.2}}}},
     "experiments": [{"revs": [{"rev": "fff000", "name": "t500", "error": None, "experiments": None,
                                "data": {"params": {"params.yaml": {"data": {"T": 500, "seed": 0}}},
                                         "metrics": {"reports/evaluate/metrics.json": {"data": {"kid": 0.3}}}}}]}]},
]


def test_parse_and_default_selection():
    exps = parse_exp_show(SHOW)
    assert [e.name for e in exps] == ["workspace", "main", "t500"]
    assert exps[2].params["T"] == 500 and exps[2].metrics["evaluate:kid"] == 0.3 and exps[0].rev is None
    chosen = select(exps, [])
    assert [e.name for e in chosen] == ["main", "workspace", "t500"]
    md = tables(chosen)
    assert "| T | 1000 | 500 | 500 |" in md and "0.3 (+0.1, +50.0%)" in md


def test_prc_note_states_N_and_k_and_flags_unequal_runs():
    a = Exp("a", None, metrics={"evaluate:precision": 0.5, "evaluate:recall": 0.4, "evaluate:prc_k": 3, "evaluate:n_generated": 64, "evaluate:n_reference": 136})
    b = Exp("b", "r", metrics={**a.metrics, "evaluate:n_generated": 32})
    assert "k = 3, 64 generated vs 136 reference images" in prc_note([a, a]) and "differ" not in prc_note([a, a])
    assert "The runs differ in N or k" in prc_note([a, b])
    assert prc_note([Exp("c", None)]) == ""


# ---------------------------------------------------------------------------------------------
# Paths written once: the report and compare find every file through dvc.yaml

DVC = dvcyaml.load(ROOT / "dvc.yaml")


def test_report_inputs_are_exactly_the_report_stage_deps():
    from ddpmlab.pipeline.stages.report import INPUTS, inputs

    found = inputs(ROOT / "dvc.yaml")
    assert set(found) == set(INPUTS)
    made = dvcyaml.producers(DVC)
    for key, (stage, name) in INPUTS.items():
        rel = found[key].relative_to(ROOT).as_posix()
        assert made[rel] == stage and rel.endswith("/" + name), key
    # every report dep is a stage output the report reads, its script, or package code: nothing stale
    deps = DVC["stages"]["report"]["deps"]
    outs = {p.relative_to(ROOT).as_posix() for p in found.values()}
    assert {d for d in deps if not d.startswith(("src/", "stages/"))} == outs
    assert "--input" not in DVC["stages"]["report"]["cmd"] and "reports/prepare" not in DVC["stages"]["report"]["cmd"]


def test_stage_inputs_names_a_missing_or_stale_dep():
    d = copy.deepcopy(DVC)
    d["stages"]["report"]["deps"].remove("reports/sample/grid.png")
    from ddpmlab.pipeline.stages.report import INPUTS

    with pytest.raises(dvcyaml.DvcYamlError, match="reads reports/sample/grid.png .* does not list it under deps"):
        dvcyaml.stage_inputs(d, "report", INPUTS)
    d = copy.deepcopy(DVC)
    d["stages"]["report"]["deps"].append("models/model.pt")
    with pytest.raises(dvcyaml.DvcYamlError, match="deps it does not read: models/model.pt"):
        dvcyaml.stage_inputs(d, "report", INPUTS)
    with pytest.raises(dvcyaml.DvcYamlError, match="declares no output 'nope.png'"):
        dvcyaml.output(DVC, "sample", "nope.png")


def test_compare_locates_files_through_dvc_yaml():
    from ddpmlab.tools.compare import GRID, LOSS_SERIES

    assert dvcyaml.output(DVC, *GRID) == "reports/sample/grid.png"
    assert dvcyaml.live_series(DVC, *LOSS_SERIES["val"]) == "reports/train/plots/metrics/val/loss.tsv"


@pytest.mark.parametrize("f", ["src/ddpmlab/pipeline/stages/report.py", "stages/report.py", "src/ddpmlab/tools/compare.py"])
def test_no_pipeline_path_is_written_in_python(f):
    text = (ROOT / f).read_text()
    outs = set(dvcyaml.producers(DVC))
    paths = outs | {Path(p).parent.as_posix() for p in outs}  # files and their folders, e.g. reports/sample
    assert not [p for p in sorted(paths) if "/" in p and p in text]


@pytest.mark.parametrize("text", ['{"train:val.loss": 0.', "", "[1, 2]", '{"val_loss": null}', '{"kid": "0.1"}', "\xff\xfe"])
def test_gate_refuses_a_bad_baseline_in_one_line_exit_2(tmp_path, text):
    """Truncated, empty, list-shaped, null- or string-valued, undecodable: exit 2 (bad input), never 1 (a regression)."""
    from .conftest import committed_params_file

    (tmp_path / "base.json").write_bytes(text.encode("latin-1"))
    r = subprocess.run([sys.executable, "-m", "ddpmlab.tools.gate", "smoke", "--params", str(committed_params_file()), "--baseline", "base.json"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("gate: baseline base.json: ") and "re-record it" in r.stderr


def test_write_baseline_refuses_a_run_without_a_gated_metric(tmp_path, monkeypatch, capsys):
    """Writing null for a missing metric would crash every later gate: refused, nothing written."""
    from ddpmlab.tools import gate

    from .conftest import committed_params_file

    run = Exp("smoke", "abc", params={}, metrics={"val_loss": 0.2, "kid": 0.1})  # no residuals:chi2_ks
    monkeypatch.setattr(gate, "exp_show", lambda: [run])
    with pytest.raises(SystemExit) as e:
        gate.main(["smoke", "--params", str(committed_params_file()), "--baseline", str(tmp_path / "b.json"), "--write-baseline"])
    assert e.value.code == 2 and not (tmp_path / "b.json").exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "smoke has no finite value for residuals:chi2_ks" in err

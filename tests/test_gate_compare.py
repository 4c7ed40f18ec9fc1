"""The regression gate's rules and the comparison's parsing of `dvc exp show --json`."""

import pytest

from ddpmlab.compare import parse_exp_show, select, tables
from ddpmlab.errors import ParamError
from ddpmlab.gate import Rule, rules_from_params, run_gate

RULES = rules_from_params({"gate": {"rules": [
    {"metric": "train:val.loss", "better": "lower", "max_worse_pct": 10},
    {"metric": "evaluate:kid", "better": "lower", "max_worse_abs": 0.05},
    {"metric": "memorization:mem_val_pixel_median", "better": "higher", "max_worse_pct": 5},
]}})
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


def test_bad_rule_is_named():
    with pytest.raises(ParamError, match=r"gate.rules\[0\].better"):
        Rule.parse(0, {"metric": "x", "better": "smaller", "max_worse_pct": 1})
    with pytest.raises(ParamError, match="at least one of"):
        Rule.parse(0, {"metric": "x", "better": "lower"})


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

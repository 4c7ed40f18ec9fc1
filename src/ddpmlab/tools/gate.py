"""The CI regression gate: an experiment's metrics against a committed baseline, with tolerances from params.yaml.

    ddpmlab gate smoke-base                       # check; exit 1 naming every regression
    ddpmlab gate smoke-base --write-baseline      # record this run as the new baseline (and its grid beside it)

params.yaml `gate.rules` (validated by `schema.GateParams`): each names a metric, a headline key of
reports/metrics.json (`kid`, `val_loss`) or `<stage folder>:<key>` of a stage's own file (`residuals:chi2_ks`), as
`ddpmlab compare` shows them; whether lower or higher is better,
and the tolerated worsening in percent or absolute units. A metric missing from the run fails the gate
(never a silent pass).

Exit status: 0 passed (or baseline written), 1 a regression, 2 bad input (params, a baseline that is not a JSON
object of finite numbers, a metric the run to record lacks), 3 a crash.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from ddpmlab.core.errors import UserError
from ddpmlab.core.files import write_bytes
from ddpmlab.pipeline import dvcyaml
from ddpmlab.pipeline.command import FINDING, command, stage_parser
from ddpmlab.pipeline.io import write_json
from ddpmlab.pipeline.schema import GateParams, load_params
from ddpmlab.tools.compare import GRID, _read, add_diagnostics, exp_show, select


@dataclass
class Rule:
    metric: str
    better: str  # lower | higher
    max_worse_pct: float | None
    max_worse_abs: float | None

    def check(self, baseline: dict, new: dict) -> str | None:
        """None if within tolerance, else a readable message naming metric, baseline, new value and tolerance."""
        if self.metric not in baseline:
            return f"{self.metric}: not in the baseline file (re-record it with --write-baseline)"
        b, v = baseline[self.metric], new.get(self.metric)
        if not _number(v):
            return f"{self.metric}: missing or not a finite number in this run ({v!r}); baseline {b:.6g}"
        worse = (v - b) if self.better == "lower" else (b - v)
        limits = []
        if self.max_worse_abs is not None:
            limits.append(self.max_worse_abs)
        if self.max_worse_pct is not None:
            limits.append(abs(b) * self.max_worse_pct / 100)
        allowed = max(limits)  # the looser of the two tolerances
        if worse <= allowed:
            return None
        pct = f" ({100 * worse / abs(b):.1f}%)" if b else ""
        tol = " or ".join(s for s in (f"{self.max_worse_pct:g}%" if self.max_worse_pct is not None else "",
                                       f"{self.max_worse_abs:g} absolute" if self.max_worse_abs is not None else "") if s)
        return (f"REGRESSION {self.metric}: {v:.6g} vs baseline {b:.6g} is worse by {worse:.4g}{pct} "
                f"({self.better} is better); tolerance {tol}")


class GateError(UserError):
    """A baseline or a run the gate cannot use (one line)."""


MAX_BASELINE_BYTES = 1 << 20


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_baseline(path: Path, rules: list[Rule], exp_name: str) -> dict:
    """The baseline file: a JSON object holding a finite number for every gated metric, else GateError."""
    if not path.is_file():
        raise GateError(f"baseline {path} not found; record one with `ddpmlab gate {exp_name} --write-baseline` and commit it")
    if path.stat().st_size > MAX_BASELINE_BYTES:
        raise GateError(f"baseline {path}: {path.stat().st_size} bytes, more than a baseline of metrics holds ({MAX_BASELINE_BYTES}); re-record it")
    try:
        baseline = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise GateError(f"baseline {path}: not valid JSON ({str(e).splitlines()[0][:120]}); re-record it with --write-baseline") from None
    if not isinstance(baseline, dict):
        raise GateError(f"baseline {path}: a JSON {type(baseline).__name__}, expected an object of metric: number; re-record it with --write-baseline")
    bad = [r.metric for r in rules if r.metric in baseline and not _number(baseline[r.metric])]
    if bad:
        raise GateError(f"baseline {path}: {bad[0]} = {baseline[bad[0]]!r} is not a finite number; re-record it with --write-baseline")
    return baseline


def grid_beside(baseline: Path) -> Path:
    """Where a baseline's sample grid is recorded: ci/smoke_baseline.json -> ci/smoke_baseline_grid.png."""
    return baseline.with_name(baseline.stem + "_grid.png")


def rules_from_params(gate: GateParams) -> list[Rule]:
    return [Rule(r.metric, r.better, r.max_worse_pct, r.max_worse_abs) for r in gate.rules]


def run_gate(rules: list[Rule], baseline: dict, metrics: dict) -> list[str]:
    return [m for m in (r.check(baseline, metrics) for r in rules) if m]


@command("gate")
def main(argv=None) -> int:
    ap = stage_parser(__doc__, prog="ddpmlab gate", formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exp", help="experiment name or revision to check ('workspace' for the workspace)")
    ap.add_argument("--baseline", type=Path, help="baseline metrics json (default: params gate.baseline)")
    ap.add_argument("--write-baseline", action="store_true", help="store this run's gated metrics as the baseline")
    ap.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"), help="the pipeline whose stage files hold the diagnostics")
    args = ap.parse_args(argv)
    P = load_params(args.params)
    rules, path = rules_from_params(P.gate), args.baseline or Path(P.gate.baseline)
    baseline = None if args.write_baseline else read_baseline(path, rules, args.exp)  # before asking dvc: fail fast
    exp = add_diagnostics(select(exp_show(), [args.exp]), dvcyaml.load(args.dvc_yaml))[0]
    if args.write_baseline:
        missing = [r.metric for r in rules if not _number(exp.metrics.get(r.metric))]
        if missing:
            raise GateError(f"{exp.name} has no finite value for {', '.join(missing)} (got {exp.metrics.get(missing[0])!r}); "
                            "a baseline must hold every gated metric: run the pipeline to the end first")
        headline = {k: v for k, v in exp.metrics.items() if ":" not in k and (_number(v) or isinstance(v, bool))}  # for pr-comment
        write_json(path, {**headline, **{r.metric: exp.metrics[r.metric] for r in rules}})
        print(f"gate: baseline for {len(rules)} metrics written to {path} from {exp.name}")
        grid = _read(dvcyaml.output(dvcyaml.load(args.dvc_yaml), *GRID), exp.rev, "rb")
        beside = grid_beside(path)  # what `ddpmlab pr-comment` shows as main's grid
        if grid:
            write_bytes(beside, grid)
            print(f"gate: its sample grid written to {beside}")
        else:
            beside.unlink(missing_ok=True)
            print(f"gate: {exp.name} has no sample grid; {beside} removed (a pull request's comment shows it as missing)")
        return 0
    failures = run_gate(rules, baseline, exp.metrics)
    for r in rules:
        print(f"gate: {r.metric}: baseline {baseline.get(r.metric)!r}, {exp.name} {exp.metrics.get(r.metric)!r}")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        print(f"gate: FAILED ({len(failures)} of {len(rules)} rules)", file=sys.stderr)
        return FINDING
    print(f"gate: passed ({len(rules)} rules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

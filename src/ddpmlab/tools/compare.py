"""Compare experiments from what DVC records: params that differ, metrics with deltas, curves, sample grids.

    ddpmlab compare                 # the baseline commit, the workspace and all experiments of HEAD
    ddpmlab compare t500 t1000      # chosen experiments (names or revisions), the first is the baseline
    ddpmlab compare --out reports/compare

Reads `dvc exp show --json` for params and metrics and `dvc.api` for the files of each revision
(loss tables, sample grids), found through dvc.yaml (`pipeline.dvcyaml`), never by paths of its own.
Writes compare.md with PNGs beside it.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ddpmlab.core.errors import UserError
from ddpmlab.core.files import write_text
from ddpmlab.pipeline import dvcyaml
from ddpmlab.pipeline.command import command
from ddpmlab.pipeline.io import fmt

# What is drawn, named by (stage, file) or by dvclive metric; dvc.yaml says where each lives.
LOSS_SERIES = {"train": ("train", "train/loss"), "val": ("train", "val/loss")}  # dvclive metric names
GRID = ("sample", "grid.png")


class CompareError(UserError):
    """What to compare cannot be found or read (one line)."""


@dataclass
class Exp:
    name: str
    rev: str | None  # None: the workspace
    params: dict = field(default_factory=dict)  # flat "a.b" -> value
    metrics: dict = field(default_factory=dict)  # the headline's "key" -> value, then every stage file's "stage:key" -> value


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def metric_key(path: str, key: str) -> str:
    """`kid` for the headline (a file directly in the reports folder), `evaluate:kid` for a file in a stage's own folder."""
    folder = Path(path).parent.name
    return key if folder in ("reports", "") else f"{folder}:{key}"


def _entry(e: dict, name: str) -> Exp:
    data = e.get("data") or {}
    params = flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
    metrics = {}
    for path, m in (data.get("metrics") or {}).items():
        for k, v in flatten(m.get("data") or {}).items():
            metrics[metric_key(path, k)] = v
    rev = None if e.get("rev") == "workspace" else e.get("rev")
    return Exp(name, rev, params, metrics)


def parse_exp_show(rows: list) -> list[Exp]:
    """`dvc exp show --json` (DVC 3) -> workspace, baseline commit(s), their experiments, in that order."""
    out = []
    for e in rows:
        if e.get("error"):
            continue
        base = "workspace" if e.get("rev") == "workspace" else (e.get("name") or e.get("rev", "")[:7])
        out.append(_entry(e, base))
        for group in e.get("experiments") or []:
            for r in group.get("revs") or []:
                out.append(_entry(r, r.get("name") or r.get("rev", "")[:7]))
    return out


def exp_show() -> list[Exp]:
    r = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise CompareError(f"`dvc exp show --json` failed: {' '.join(r.stderr.strip().split())[-1000:]}")
    return parse_exp_show(json.loads(r.stdout))


MAX_DIAGNOSTICS_BYTES = 1 << 20  # a stage's JSON of numbers is a few KB


def add_diagnostics(exps: list[Exp], dvc: dict) -> list[Exp]:
    """Every stage's own JSON files (dvc.yaml outputs, in git) of each run, as "stage:key" metrics beside the headline
    `dvc exp show` gives. A run without a file (a partial run, a failed one) just lacks its keys."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from scmrepo.exceptions import SCMError

    _, files = dvcyaml.json_outputs(dvc)
    for e in exps:
        try:
            fs = DVCFileSystem(".", rev=e.rev)
        except (OSError, DvcException, SCMError):
            continue
        for path in files:
            try:
                if fs.size(path) > MAX_DIAGNOSTICS_BYTES:
                    continue
                data = json.loads(fs.read_text(path))
            except (OSError, ValueError, DvcException, SCMError):
                continue
            if isinstance(data, dict):
                for k, v in flatten(data).items():
                    e.metrics.setdefault(metric_key(path, k), v)
    return exps


def select(exps: list[Exp], names: list[str]) -> list[Exp]:
    if not names:
        # workspace first only when it differs from the baseline commit; then the baseline and its experiments
        base = [e for e in exps if e.name != "workspace"]
        ws = [e for e in exps if e.name == "workspace"]
        if ws and base and ws[0].params == base[0].params and ws[0].metrics == base[0].metrics:
            ws = []
        return base[:1] + ws + base[1:]
    chosen = []
    for n in names:
        match = [e for e in exps if e.name == n or (e.rev and e.rev.startswith(n))]
        if not match:
            raise CompareError(f"no experiment named {n!r}; known: {', '.join(e.name for e in exps)}")
        chosen.append(match[0])
    return chosen


def tables(exps: list[Exp]) -> str:
    base = exps[0]
    keys = sorted({k for e in exps for k in e.params})
    differ = [k for k in keys if len({json.dumps(e.params.get(k), sort_keys=True) for e in exps}) > 1]
    lines = ["### Parameters that differ", ""]
    if differ:
        lines += ["| param | " + " | ".join(e.name for e in exps) + " |", "|---|" + "---|" * len(exps)]
        lines += [f"| {k} | " + " | ".join(fmt(e.params.get(k)) for e in exps) + " |" for k in differ]
    else:
        lines.append("(none: all compared runs share their parameters)")
    mkeys = sorted({k for e in exps for k in e.metrics if isinstance(e.metrics[k], (int, float))})
    head = [k for k in mkeys if ":" not in k]
    diag = [k for k in mkeys if ":" in k and not isinstance(next((e.metrics[k] for e in exps if k in e.metrics), None), bool)]
    lines += ["", f"### Metrics (delta against {base.name})", ""]
    lines += metric_rows(exps, head) if head else ["(no headline metrics: the report stage writes them)"]
    lines += ["", f"<details><summary>Every stage's diagnostics ({len(diag)} values)</summary>", ""] + metric_rows(exps, diag) + ["", "</details>"]
    return "\n".join(lines)


def metric_rows(exps: list[Exp], keys: list[str]) -> list[str]:
    """A markdown table of `keys`, each run's value with its delta against the first run."""
    base = exps[0]
    lines = ["| metric | " + " | ".join(e.name for e in exps) + " |", "|---|" + "---|" * len(exps)]
    for k in keys:
        cells = []
        b = base.metrics.get(k)
        for e in exps:
            v = e.metrics.get(k)
            if e is base or not isinstance(v, (int, float)) or not isinstance(b, (int, float)) or isinstance(v, bool):
                cells.append(fmt(v))
            else:
                d = v - b
                pct = f", {100 * d / abs(b):+.1f}%" if b not in (0, None) and math.isfinite(b) else ""
                cells.append(f"{fmt(v)} ({d:+.4g}{pct})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def prc_note(exps: list[Exp]) -> str:
    """Says at which N and k each run's precision and recall were computed (they depend on both)."""
    at = sorted({(e.metrics.get("evaluate:prc_k"), e.metrics.get("evaluate:n_generated"), e.metrics.get("evaluate:n_reference"))
                 for e in exps if "evaluate:precision" in e.metrics}, key=str)
    if not at:
        return ""
    where = "; ".join(f"k = {k}, {g} generated vs {r} reference images" for k, g, r in at)
    return ("Precision and recall: Kynkäänniemi et al. 2019, k-NN manifolds on Inception pool features "
            f"({where}). Compare them only at equal N and k." + (" **The runs differ in N or k.**" if len(at) > 1 else ""))


def _read(path: str, rev: str | None, mode: str = "r"):
    import dvc.api
    from dvc.exceptions import DvcException
    from scmrepo.exceptions import SCMError

    try:
        return dvc.api.read(path, rev=rev, mode=mode)
    except (OSError, DvcException, SCMError):  # a run without this file (failed, or not pulled) is shown as missing
        return None


def _finish(fig, ax, xlabel: str, ylabel: str, path: Path) -> str:
    from ddpmlab.pipeline import figures as plotting

    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    plotting.save(fig, path)
    return path.name


def figures(exps: list[Exp], out: Path, dvc: dict) -> list[str]:
    """Overlaid loss curves, sqrt(alpha_bar_t) of each run, precision against recall, sample grids side by side."""
    from ddpmlab.core.schedule import ScheduleConfig
    from ddpmlab.pipeline import figures as plotting

    plt = plotting.plt
    made = []
    loss_tsv = {split: dvcyaml.live_series(dvc, *where) for split, where in LOSS_SERIES.items()}
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, e in enumerate(exps):
        for split, style in (("train", "-"), ("val", "o--")):
            text = _read(loss_tsv[split], e.rev)
            if text:
                rows = np.array([line.split("\t") for line in text.strip().splitlines()[1:]], dtype=float)
                ax.plot(rows[:, 0] + 1, rows[:, -1], style, color=f"C{i}", ms=3, lw=1, label=f"{e.name} {split}")
    made.append(_finish(fig, ax, "epoch", "loss", out / "loss_curves.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, e in enumerate(exps):
        p = e.params
        try:
            s = ScheduleConfig.from_dict({"T": p["T"], **{k: p[f"schedule.{k}"] for k in ("name", "beta_start", "beta_end")}}).build()
        except (KeyError, TypeError, ValueError):  # a run with missing or invalid schedule params has no curve to draw
            continue
        ax.plot(np.arange(1, s.T + 1), s.sqrt_alpha_bar, color=f"C{i}", label=f"{e.name}: {p.get('schedule.name')} T={s.T}")
    made.append(_finish(fig, ax, "t", "sqrt(alpha_bar_t)", out / "sqrt_alpha_bar.png"))

    pr = [(i, e) for i, e in enumerate(exps) if all(isinstance(e.metrics.get(f"evaluate:{k}"), (int, float)) for k in ("precision", "recall"))]
    if pr:
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
        for i, e in pr:
            ax.plot(e.metrics["evaluate:recall"], e.metrics["evaluate:precision"], "o", color=f"C{i}", label=e.name)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("recall (coverage of the training images)")
        ax.set_ylabel("precision (samples on the data manifold)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        plotting.save(fig, out / "precision_recall.png")
        made.append("precision_recall.png")

    from PIL import Image

    grid = dvcyaml.output(dvc, *GRID)
    grids = [(e.name, _read(grid, e.rev, "rb")) for e in exps]
    grids = [(n, Image.open(io.BytesIO(b)).convert("RGB")) for n, b in grids if b]
    if grids:
        fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.6), squeeze=False)
        for ax, (n, im) in zip(axes[0], grids):
            ax.imshow(im)
            ax.set_title(n, fontsize=9)
            ax.axis("off")
        plotting.save(fig, out / "sample_grids.png")
        made.append("sample_grids.png")
    return made


@command("compare")
def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(prog="ddpmlab compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exps", nargs="*", help="experiment names or revisions; the first is the baseline (default: see above)")
    ap.add_argument("--out", type=Path, default=Path("reports/compare"), help="output folder (default: reports/compare)")
    ap.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"), help="the pipeline that says where each file lives")
    args = ap.parse_args(argv)
    try:
        dvc = dvcyaml.load(args.dvc_yaml)
        dvcyaml.output(dvc, *GRID)
    except dvcyaml.DvcYamlError as e:
        raise CompareError(str(e)) from None
    exps = select(exp_show(), args.exps)
    if not exps:
        raise CompareError("nothing to compare (no commit or experiment found)")
    add_diagnostics(exps, dvc)
    args.out.mkdir(parents=True, exist_ok=True)
    made = figures(exps, args.out, dvc)
    md = "\n".join([f"## Experiment comparison: {', '.join(e.name for e in exps)}", "", tables(exps), "", prc_note(exps), ""]
                   + [f"![{m}]({m})" for m in made]) + "\n"
    write_text(args.out / "compare.md", md)
    print(md)
    return args.out / "compare.md"


if __name__ == "__main__":
    main()

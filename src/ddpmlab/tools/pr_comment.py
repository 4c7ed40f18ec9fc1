"""A pull request's comment: its smoke experiment against main's, the headline with direction and delta, both grids.

    ddpmlab pr-comment smoke-base --baseline-rev origin/main --out reports/compare/pr
    cml comment create reports/compare/pr/comment.md      # CML uploads the images the markdown references

Main's side is what main committed: the gate's baseline metrics (params.yaml gate.baseline, ci/smoke_baseline.json)
and the sample grid recorded beside them (the same name with `_grid.png`), read at --baseline-rev with git;
`ddpmlab gate EXP --write-baseline` records both. The pull request's side is experiment EXP (its headline, its
stages' diagnostics, its grid), read through DVC. A grid that is not there is shown as missing, never dropped.
Writes comment.md and the PNGs it references, and prints the images it references (what CML uploads).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from ddpmlab.core.errors import UserError
from ddpmlab.core.files import write_bytes, write_text
from ddpmlab.pipeline import dvcyaml
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.io import fmt
from ddpmlab.pipeline.schema import load_params
from ddpmlab.tools.compare import GRID, Exp, _read, add_diagnostics, exp_show, select
from ddpmlab.tools.gate import _number, grid_beside, read_baseline, rules_from_params

# which way is better for each headline metric (None: a size, not a quality)
BETTER = {"fid": "lower", "kid": "lower", "kid_std": None, "precision": "higher", "recall": "higher", "val_loss": "lower",
          "resid_ok": "higher", "resid_kurt": "lower", "resid_corr": "lower", "resid_scale": "lower", "copies_px": "lower",
          "copies_feat": "lower", "img_per_s": "higher", "n_params": None, "n_train": None}
MAX_GRID_BYTES = 8 << 20


class CommentError(UserError):
    """What the comment needs cannot be read (one line)."""


def git_show(rev: str, path: Path) -> bytes | None:
    """The file `path` at `rev`, or None when the revision or the file is not there."""
    r = subprocess.run(["git", "show", f"{rev}:{path.as_posix()}"], capture_output=True)
    return r.stdout if r.returncode == 0 else None


def verdict(key: str, base, new, better: str | None) -> str:
    if base is None or new is None:
        return ""
    if isinstance(base, bool) or isinstance(new, bool):
        return "" if base == new else ("better" if new else "worse") if better else "changed"
    if not (_number(base) and _number(new)) or better is None:
        return ""
    if new == base:
        return "same"
    return "better" if (new < base) == (better == "lower") else "worse"


def table(pr: Exp, base: dict, directions: dict[str, str | None]) -> list[str]:
    keys = [k for k in directions if k in pr.metrics or k in base]
    lines = ["| metric | better | main | this PR | change |", "|---|---|---|---|---|"]
    for k in keys:
        b, n, better = base.get(k), pr.metrics.get(k), directions[k]
        delta = ""
        if _number(b) and _number(n):
            delta = f"{n - b:+.4g}" + (f" ({100 * (n - b) / abs(b):+.1f}%)" if b else "")
        word = verdict(k, b, n, better)
        lines.append(f"| {k} | {better or ''} | {fmt(b) if b is not None else 'missing'} | {fmt(n) if n is not None else 'missing'} | "
                     f"{delta}{' ' if delta and word else ''}{'**' + word + '**' if word == 'worse' else word} |")
    return lines


def build(pr: Exp, pr_grid: bytes | None, base: dict, base_grid: bytes | None, base_label: str, out: Path,
          gated: dict[str, str] | None = None) -> tuple[str, list[Path]]:
    """comment.md's text and the images it references (written into `out`). `gated`: the gate rules' metric -> better."""
    out.mkdir(parents=True, exist_ok=True)
    directions = {**BETTER, **(gated or {})}
    for k in base:  # any other metric of the baseline, direction unknown
        directions.setdefault(k, None)
    images, cells = [], []
    for label, name, data in ((f"main ({base_label})", "main_grid.png", base_grid), (f"this PR ({pr.name})", "pr_grid.png", pr_grid)):
        if data:
            write_bytes(out / name, data)
            images.append(out / name)
            cells.append(f"![{label}]({name})")
        else:
            cells.append(f"*missing: {label} has no sample grid*")
    md = "\n".join(["## Smoke experiment: this PR against main", "",
                    f"Headline metrics of `{pr.name}` against main's committed smoke baseline ({base_label}).", ""]
                   + table(pr, base, directions)
                   + ["", "| main | this PR |", "|---|---|", f"| {cells[0]} | {cells[1]} |", ""])
    write_text(out / "comment.md", md)
    return md, images


@command("pr-comment")
def main(argv=None) -> int:
    ap = stage_parser(__doc__, prog="ddpmlab pr-comment", formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exp", help="the pull request's smoke experiment (name or revision)")
    ap.add_argument("--baseline-rev", default="origin/main", help="the git revision whose committed baseline is main's (default origin/main)")
    ap.add_argument("--baseline", type=Path, help="the baseline metrics file (default: params gate.baseline)")
    ap.add_argument("--out", type=Path, default=Path("reports/compare/pr"), help="folder for comment.md and its images")
    ap.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"), help="the pipeline that says where the grid lives")
    args = ap.parse_args(argv)
    P = load_params(args.params)
    path = args.baseline or Path(P.gate.baseline)
    text = git_show(args.baseline_rev, path)
    if text is None:
        raise CommentError(f"{args.baseline_rev}:{path} not found (fetch main, e.g. git fetch origin main, or record a baseline there)")
    tmp = args.out / ".baseline.json"
    write_bytes(tmp, text)
    try:
        base = read_baseline(tmp, rules_from_params(P.gate), args.exp)
    finally:
        tmp.unlink(missing_ok=True)
    base_grid = git_show(args.baseline_rev, grid_beside(path))
    dvc = dvcyaml.load(args.dvc_yaml)
    pr = add_diagnostics(select(exp_show(), [args.exp]), dvc)[0]
    pr_grid = _read(dvcyaml.output(dvc, *GRID), pr.rev, "rb")
    if pr_grid is not None and len(pr_grid) > MAX_GRID_BYTES:
        pr_grid = None
    gated = {r.metric: r.better for r in rules_from_params(P.gate)}
    md, images = build(pr, pr_grid, base, base_grid if base_grid and len(base_grid) <= MAX_GRID_BYTES else None, args.baseline_rev, args.out, gated)
    print(md)
    print("images: " + (" ".join(str(p) for p in images) or "(none)"))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

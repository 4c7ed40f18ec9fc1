"""The chi-squared check on residuals of any model.

    ddpmlab residuals check FILE.npz [--json] [--alpha A]

FILE.npz holds r [M, C, H, W] float (eps - eps_theta(x_t, t)), t [M] int (0-based timesteps, each
shared by at least 2 rows) and T (the number of diffusion steps). Prints the reading (with --json:
the verdict, every test's statistic, p-value and effect size, and the reading). Exit status: 0 when
the residuals are consistent with the conjecture, 1 when not, 2 on bad input (one line on stderr), 3 on a crash.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile

import numpy as np

from ddpmlab.core.errors import DataError
from ddpmlab.core.residuals import check as R
from ddpmlab.pipeline.command import BAD_INPUT, FINDING, command
from ddpmlab.pipeline.data.splits import read_array
from ddpmlab.pipeline.io import _clean


def load(path: str) -> tuple[np.ndarray, np.ndarray, int]:
    """r, t, T from an .npz, read as the stages read theirs (no pickles; each header's shape checked against the bytes
    behind it before anything is allocated); ResidualInputError with one line otherwise."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        raise R.ResidualInputError(f"{path}: not a readable .npz file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    missing = [k for k in ("r", "t", "T") if k not in names]
    if missing:
        raise R.ResidualInputError(f"{path}: missing arrays {missing}; expected r [M, C, H, W], t [M], T (has {names})")
    try:
        return read_array(path, "r"), read_array(path, "t"), read_array(path, "T")
    except DataError as e:
        raise R.ResidualInputError(str(e)) from None


@command("residuals check")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ddpmlab residuals", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check residuals in an .npz (r, t, T) against the chi-squared conjecture")
    c.add_argument("file", help="an .npz with r [M, C, H, W] float, t [M] int (0-based), T")
    c.add_argument("--json", action="store_true", help="print the verdict, every statistic and p-value, and the reading as JSON")
    c.add_argument("--alpha", type=float, default=0.01, help="family-wise false-alarm rate (default 0.01)")
    args = ap.parse_args(argv)
    try:
        r, t, T = load(args.file)
        res, s2, _ = R.chi_squared_check(r, t, T, alpha=args.alpha)
    except R.ResidualInputError as e:
        print(f"residuals check: {e}", file=sys.stderr)
        return BAD_INPUT
    if args.json:
        tests = {n: {"statistic": res.test(n).statistic, "p": res.test(n).p, "effect": res.test(n).effect, "ci95": [res.test(n).lo, res.test(n).hi],
                     "rejected": res.test(n).rejected, "component": res.test(n).component}
                 for names in R.COMPONENTS.values() for n in names}
        doc = {"verdict": "consistent" if res.verdict else "not consistent", "consistent": res.verdict, "alpha": res.alpha,
               "components": {c: getattr(res, f"{c}_ok") for c in R.COMPONENTS}, "tests": tests,
               "sizes": {"rows": res.n_rows, "t_values": res.n_t, "rows_per_t_min": res.rows_per_t_min, "D": res.D},
               "ks_descriptive": res.ks, "sigma2": {"t": s2.t.tolist(), "sigma2": s2.sigma2.tolist()}, "reading": res.reading()}
        print(json.dumps(_clean(doc), indent=1))
    else:
        print(res.reading())
    return 0 if res.verdict else FINDING


if __name__ == "__main__":
    sys.exit(main())

"""`ddpmlab`: the one command for what is run outside `dvc repro`.

    ddpmlab sample --model models/model.pt --n 16 --out-dir my_samples     # a checkpoint -> PNGs (and/or --npz)
    ddpmlab export diffusers exported/ --model models/model.pt             # a folder DDPMPipeline/DDIMPipeline load
    ddpmlab compare t500 t1000                                             # experiments side by side
    ddpmlab gate smoke-base                                                # the CI regression gate
    ddpmlab pr-comment smoke-base --baseline-rev origin/main               # a PR's comment against main
    ddpmlab residuals check residuals.npz                                  # the chi-squared check on any model
    ddpmlab bench --preset default                                         # training and sampling speed
    ddpmlab common-reference --reference data/prepared/train.npz a.npz b.npz
    ddpmlab preset presets/gpu.yaml                                        # an experiment from a preset file
    ddpmlab join                                                           # join a multi-node run led elsewhere

`ddpmlab COMMAND --help` shows each command's options and an example. Exit status, in every command: 0 done;
1 a finding (the gate found a regression, the residual check "not consistent"); 2 bad input (one line on
stderr naming the file or key); 3 a crash (a bug: the traceback is printed).
"""

from __future__ import annotations

import importlib
import sys

from ddpmlab import __version__
from ddpmlab.pipeline.command import BAD_INPUT

# name -> (module whose main(argv) runs it, one line of help)
COMMANDS = {
    "sample": ("ddpmlab.tools.sample", "draw N images from a checkpoint into a folder of PNGs and/or an .npz"),
    "export": ("ddpmlab.tools.export", "write a checkpoint as a folder diffusers loads (export diffusers DIR)"),
    "compare": ("ddpmlab.tools.compare", "compare experiments: params that differ, metrics with deltas, curves, grids"),
    "gate": ("ddpmlab.tools.gate", "check an experiment's metrics against a committed baseline (CI)"),
    "pr-comment": ("ddpmlab.tools.pr_comment", "a pull request's comment: its smoke run against main's baseline, with both grids"),
    "residuals": ("ddpmlab.tools.residuals", "the chi-squared residual check on any model's residuals (residuals check FILE)"),
    "bench": ("ddpmlab.tools.bench", "training-step and sampling speed, side by side with a plain reference and diffusers"),
    "common-reference": ("ddpmlab.tools.common_reference", "KID/FID of sample sets of different sizes against one reference"),
    "preset": ("ddpmlab.tools.preset", "run an experiment from a preset file of params overrides (dvc exp run -S ...)"),
    "join": ("ddpmlab.tools.join", "join, from this machine, a multi-node training run that `dvc repro` leads on another"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:{width}s}  {text}" for name, (_, text) in COMMANDS.items())
    return f"usage: ddpmlab [-h] [--version] COMMAND [ARGS ...]\n\ncommands:\n{rows}\n\nexamples:\n{__doc__.split(chr(10) * 2, 1)[1].rstrip()}\n"


def main(argv: list[str] | None = None):
    """Run `ddpmlab COMMAND ARGS`. Given argv (a list), the command's own main gets it and a crash raises; as the
    console script (argv None) the command reads sys.argv and a crash exits 3, as every command does."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), end="", file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else BAD_INPUT)
    if args[0] == "--version":
        print(f"ddpmlab {__version__}")
        sys.exit(0)
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"ddpmlab: unknown command {name!r}; one of: {', '.join(COMMANDS)} (ddpmlab --help)", file=sys.stderr)
        sys.exit(BAD_INPUT)
    run = importlib.import_module(COMMANDS[name][0]).main
    if argv is None:
        sys.argv = [f"ddpmlab {name}", *rest]
        rc = run()
    else:
        rc = run(rest)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()

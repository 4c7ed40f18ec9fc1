"""The one wrapper of every command's `main` (dvc.yaml stages and tools): user errors end in one line, bugs raise."""

from __future__ import annotations

import argparse
import functools
import sys

from ddpmlab.core.errors import UserError
from ddpmlab.core.names import DEVICES

BAD_INPUT = 2  # exit status for a user error (argparse uses 2 for bad arguments as well)


def command(name: str):
    """Decorate a `main(argv=None)`: a UserError or a missing input file prints `name: message` (one line) to
    stderr and exits 2; Ctrl-C exits 130 with one line; any other exception is a bug and raises as it is."""

    def wrap(main):
        @functools.wraps(main)
        def run(argv=None):
            try:
                return main(argv)
            except UserError as e:
                print(f"{name}: {e}", file=sys.stderr)
            except FileNotFoundError as e:
                print(f"{name}: {e.filename or e}: no such file (run `dvc repro` to make the pipeline's inputs, or check the path)", file=sys.stderr)
            except KeyboardInterrupt:
                print(f"{name}: interrupted", file=sys.stderr)
                sys.exit(130)
            sys.exit(BAD_INPUT)

        return run

    return wrap


def stage_parser(doc: str | None, *, device: bool = False, **kwargs) -> argparse.ArgumentParser:
    """The parser every command starts from: --params (and --device where the command computes)."""
    ap = argparse.ArgumentParser(description=doc, **kwargs)
    ap.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    if device:
        ap.add_argument("--device", default="auto", choices=DEVICES, help="where to run (default: auto, CUDA when visible)")
    return ap

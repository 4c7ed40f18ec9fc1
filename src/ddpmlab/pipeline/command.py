"""The one wrapper of every command's `main` (dvc.yaml stages and tools): user errors end in one line, bugs raise."""

from __future__ import annotations

import argparse
import functools
import os
import socket
import sys
import traceback
from pathlib import Path

from ddpmlab.core.errors import UserError
from ddpmlab.core.names import DEVICES

# Exit statuses, one meaning each in every command: 0 done; 1 a finding (the gate found a regression, the residual
# check "not consistent"); 2 bad input (argparse uses 2 for bad arguments as well); 3 a crash (a bug: traceback).
FINDING, BAD_INPUT, CRASH = 1, 2, 3
# set by a launcher of several workers: where a worker's crash writes its traceback ("{rank}" is its rank), so
# the launcher reports the run in one line instead of N interleaved tracebacks
WORKER_TRACEBACK = "DDPMLAB_WORKER_TRACEBACK"


def command(name: str):
    """Decorate a `main(argv=None)`: a UserError or a missing input file prints `name: message` (one line) to
    stderr and exits 2; Ctrl-C exits 130 with one line; any other exception is a bug: called with a list of
    arguments (tests, other code) it raises as it is; run as a command (argv None) it prints the traceback
    and exits 3, so a crash never reads as a finding (1)."""

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
            except Exception:
                if argv is not None:
                    raise
                if os.environ.get(WORKER_TRACEBACK) and "RANK" in os.environ:
                    from ddpmlab.core.files import write_text

                    rank = os.environ["RANK"]
                    write_text(os.environ[WORKER_TRACEBACK].replace("{rank}", rank), f"rank {rank} on {socket.gethostname()}\n{traceback.format_exc()}")
                    sys.exit(CRASH)
                traceback.print_exc()
                print(f"{name}: crashed (a bug, not a finding about your data): please report the traceback above", file=sys.stderr)
                sys.exit(CRASH)
            sys.exit(BAD_INPUT)

        return run

    return wrap


class _StageParser(argparse.ArgumentParser):
    """A dvc.yaml stage's parser: `usage: python stages/NAME.py ...` (runnable as printed from the repository root),
    and --help ends with the command dvc.yaml runs, read from ./dvc.yaml when --help is asked for."""

    stage: str = ""

    def format_help(self) -> str:
        text = super().format_help()
        try:
            import yaml

            cmd = yaml.safe_load(Path("dvc.yaml").read_text())["stages"][self.stage]["cmd"]
        except (OSError, ValueError, KeyError, TypeError, ImportError, AttributeError):
            return text
        return f"{text}\nexample (as `dvc repro` runs it, from the repository root):\n  {' '.join(str(cmd).split())}\n"


def stage_parser(doc: str | None, *, device: bool = False, **kwargs) -> argparse.ArgumentParser:
    """The parser every command starts from: --params (and --device where the command computes). Run as a stage's
    door (stages/NAME.py), its usage line reads `python stages/NAME.py` and --help ends with dvc.yaml's command."""
    script = Path(sys.argv[0])
    if "prog" not in kwargs and script.parent.name == "stages" and script.suffix == ".py":
        ap = _StageParser(description=doc, prog=f"python stages/{script.name}", **kwargs)
        ap.stage = script.stem
    else:
        ap = argparse.ArgumentParser(description=doc, **kwargs)
    ap.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    if device:
        ap.add_argument("--device", default="auto", choices=DEVICES, help="where to run (default: auto, CUDA when visible)")
    return ap

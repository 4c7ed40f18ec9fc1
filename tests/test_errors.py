"""One user-error base and one wrapper: every command ends a user error in one line (exit 2), a bug raises."""

import ast
import importlib
import pkgutil
import subprocess
import sys

import pytest

import ddpmlab.pipeline.stages as stages_pkg
from ddpmlab.core import errors
from ddpmlab.pipeline.command import command

from .conftest import ROOT

STAGES = sorted(m.name for m in pkgutil.iter_modules(stages_pkg.__path__))


def test_every_user_error_class_derives_from_the_one_base():
    from ddpmlab.core.checkpoint import CheckpointError
    from ddpmlab.core.device import DeviceError
    from ddpmlab.core.residuals.check import ResidualInputError
    from ddpmlab.core.sweep import CheckpointMismatch
    from ddpmlab.core.training import TrainingDiverged
    from ddpmlab.pipeline.dvcyaml import DvcYamlError
    from ddpmlab.pipeline.schema import ParamError, ParamsError

    for cls in (ParamError, errors.DataError, CheckpointError, DeviceError, ResidualInputError,
                CheckpointMismatch, TrainingDiverged, DvcYamlError, ParamsError):
        assert issubclass(cls, errors.UserError), cls


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_main_is_wrapped(name):
    main = importlib.import_module(f"ddpmlab.pipeline.stages.{name}").main
    assert getattr(main, "__wrapped__", None) is not None, f"{name}.main is not decorated with @command"


def _caught_names(handler: ast.ExceptHandler) -> set[str]:
    nodes = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type] if handler.type else []
    return {n.id if isinstance(n, ast.Name) else getattr(n, "attr", "") for n in nodes} | ({"<bare>"} if handler.type is None else set())


def test_no_command_catches_runtime_error_or_everything():
    """A stage or tool that catches RuntimeError (or Exception) turns torch's own errors into one-line exits."""
    offenders = []
    for folder in ("pipeline/stages", "tools"):
        for path in sorted((ROOT / "src/ddpmlab" / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ExceptHandler) and _caught_names(node) & {"RuntimeError", "Exception", "BaseException", "<bare>"}:
                    offenders.append(f"{folder}/{path.name}:{node.lineno}")
    assert offenders == []


def test_the_wrapper_prints_one_line_for_a_user_error_and_lets_a_bug_raise(capsys):
    @command("demo")
    def user(argv=None):
        raise errors.DataError("data/x.npz: not a prepared split; run `dvc repro prepare`")

    with pytest.raises(SystemExit) as e:
        user([])
    assert e.value.code == 2 and capsys.readouterr().err == "demo: data/x.npz: not a prepared split; run `dvc repro prepare`\n"

    @command("demo")
    def missing(argv=None):
        open("/nonexistent/input.npz")

    with pytest.raises(SystemExit) as e:
        missing([])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("demo: /nonexistent/input.npz: no such file")

    @command("demo")
    def bug(argv=None):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="illegal memory access"):
        bug([])


def test_a_crash_run_as_a_command_exits_3_with_its_traceback(tmp_path):
    """Exit 1 means a finding (a regression, "not consistent"): a bug must never read as one."""
    script = tmp_path / "crash.py"
    script.write_text("from ddpmlab.pipeline.command import command\n\n@command('demo')\ndef main(argv=None):\n"
                      "    raise RuntimeError('a bug')\n\nmain()\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 3, r.stderr
    assert "Traceback" in r.stderr and "RuntimeError: a bug" in r.stderr and "demo: crashed (a bug" in r.stderr


def test_a_stage_given_bad_input_exits_2_with_one_line(tmp_path):
    """Through the door dvc.yaml runs: a missing model file and an unknown device."""
    bad = tmp_path / "params.yaml"
    bad.write_text("T: 1000\n")
    r = subprocess.run([sys.executable, str(ROOT / "stages/sample.py"), "--params", str(bad), "--model", str(tmp_path / "m.pt"),
                        "--out", str(tmp_path / "s.npz"), "--figures", str(tmp_path / "f")], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("sample: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr

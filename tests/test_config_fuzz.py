"""Property-based fuzzing of the config loader (issue 5).

Whatever a config file, the environment or the ``--set`` flags hold, ``load_config`` either returns
a Config whose every field has its declared type and passes the checks below, or raises ConfigError
naming the file (or the override) and, where it is about a key, the key path and what was expected.
No other exception escapes, no input takes long, no YAML tag runs code.

Each property test counts the examples it ran; the counts are printed when the module finishes
(also under ``-q``): ``config fuzz: <test> ran N examples (V valid configs, E ConfigErrors)``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
import time
import tracemalloc
import typing
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import UnionType
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlearn.config import MAX_DEPTH, Config, load_config
from streamlearn.errors import ConfigError
from streamlearn.learners import LEARNERS, hparam_types
from streamlearn.typecheck import type_name

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (ROOT / "configs" / "mer.yaml").read_text()

#: No single load may take longer than this (the slow path is the first torch import, done above).
SLOW_S = 5.0

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _limits(tp: Any) -> list[Any]:
    """The ``Annotated`` limits in an annotation, also inside ``X | None``."""
    if typing.get_origin(tp) is typing.Annotated:
        return [m for m in typing.get_args(tp)[1:] if hasattr(m, "contains")]
    return [m for a in typing.get_args(tp) for m in _limits(a)]


# -- the schema, read off the dataclasses --------------------------------------------------------
SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Config)[f.name]
    for f in dataclasses.fields(Config)
    if dataclasses.is_dataclass(typing.get_type_hints(Config)[f.name])
}
FIELDS: dict[str, dict[str, Any]] = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}
KEY_PATHS = [(section, key) for section, hints in FIELDS.items() for key in hints]
HPARAMS: dict[str, dict[str, Any]] = {name: hparam_types(name) for name in LEARNERS}
#: each hyper-parameter's limits as its learner declares them (``Annotated`` metadata)
HPARAM_LIMITS: dict[str, dict[str, list[Any]]] = {
    name: {k: _limits(tp) for k, tp in hparam_types(name, include_extras=True).items()} for name in LEARNERS
}
ALL_NAMES = sorted(set(SECTIONS) | {k for _, k in KEY_PATHS} | {k for h in HPARAMS.values() for k in h})

# -- what a valid config is (the spec, written independently of the loader's code) ---------------
INT32_MAX = 2**31 - 1


def _in(lo: int, hi: int | None = None) -> typing.Callable[[Any], bool]:
    return lambda v: v is None or (lo <= v and (hi is None or v <= hi))


def _ints(lo: int, hi: int | None = None) -> typing.Callable[[Any], bool]:
    return lambda vs: vs is None or all(lo <= v and (hi is None or v <= hi) for v in vs)


def _nonempty(v: str) -> bool:
    return bool(v.strip())


def _seconds(v: float) -> bool:
    return math.isfinite(v) and v >= 0


def _device(v: str) -> bool:
    try:
        torch.device(v)
    except (RuntimeError, ValueError):
        return False
    return True


SPEC: dict[str, typing.Callable[[Any], bool]] = {
    "kafka.bootstrap_servers": _nonempty,
    "kafka.topic": _nonempty,
    "kafka.dead_letter_topic": _nonempty,
    "kafka.group_id": _nonempty,
    "kafka.partitions": _ints(0, INT32_MAX),
    "kafka.auto_offset_reset": lambda v: v in ("earliest", "latest"),
    "kafka.offset_out_of_range": lambda v: v in ("fail", "earliest", "latest"),
    "kafka.poll_timeout_ms": _in(0, INT32_MAX),
    "kafka.max_poll_records": _in(1, INT32_MAX),
    "kafka.session_timeout_ms": _in(1, INT32_MAX),
    "kafka.heartbeat_interval_ms": _in(1, INT32_MAX),
    "kafka.security_protocol": lambda v: v in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    "kafka.client": lambda v: v in ("kafka-python", "librdkafka"),
    "model.kind": lambda v: v in ("mlp", "cnn"),
    "model.n_inputs": _in(1),
    "model.n_classes": _in(1),
    "model.hidden": _ints(1),
    "learner.name": lambda v: v in LEARNERS,
    "learner.batch_size": _in(1),
    "learner.device": _device,
    "learner.seed": _in(0, 2**64 - 1),
    "learner.alignment_every": _in(0),
    "checkpoint.every_examples": _in(1),
    "checkpoint.every_seconds": _seconds,
    "checkpoint.keep": _in(1),
    "evaluation.window": _in(1),
    "evaluation.drift_delta": lambda v: 0 < v < 1,
    "runtime.threads": _in(1),
    "runtime.log_every_seconds": _seconds,
    "runtime.max_examples": _in(0),
    "serve.port": _in(0, 65535),
    "serve.publish_every": _in(1),
    "serve.max_request_bytes": _in(1),
    "serve.max_rows": _in(1),
    "serve.model_name": _nonempty,
    "serve.max_connections": _in(1, 65535),
    "serve.request_timeout_seconds": lambda v: math.isfinite(v) and v > 0,
}


def has_type(value: Any, tp: Any) -> bool:
    """``value`` is exactly of annotation ``tp`` (as loaded: floats are floats, bools are not ints)."""
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin in (typing.Union, UnionType):
        return any(has_type(value, a) for a in args)
    if origin is list:
        return type(value) is list and all(has_type(v, args[0]) for v in value)
    if origin is dict:
        return type(value) is dict and all(type(k) is str for k in value)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)  # as written; loaded, it is the dataclass
    return type(value) is tp


def conforms(value: Any, tp: Any) -> bool:
    """``value`` as written is acceptable for ``tp`` (ints stand for floats)."""
    if tp is float and type(value) is int:
        return True
    if typing.get_origin(tp) is list and type(value) is list:
        return all(conforms(v, typing.get_args(tp)[0]) for v in value)
    if typing.get_args(tp) and typing.get_origin(tp) not in (dict, typing.Literal):
        return any(conforms(value, a) for a in typing.get_args(tp))
    return has_type(value, tp)


def assert_valid(cfg: Config) -> None:
    assert isinstance(cfg, Config)
    for section, hints in FIELDS.items():
        sub = getattr(cfg, section)
        assert type(sub) is SECTIONS[section]
        for key, tp in hints.items():
            value = getattr(sub, key)
            assert has_type(value, tp), f"{section}.{key} = {value!r} is not {tp}"
            check = SPEC.get(f"{section}.{key}")
            if check is not None:
                assert check(value), f"{section}.{key} = {value!r} accepted but invalid"
    types = HPARAMS[cfg.learner.name]
    for key, value in cfg.learner.hparams.items():
        assert key in types and key not in ("device", "seed", "alignment_every")
        assert conforms(value, types[key]), f"learner.hparams.{key} = {value!r} is not {types[key]}"
        assert not (isinstance(value, float) and not math.isfinite(value))
        for limit in HPARAM_LIMITS[cfg.learner.name][key]:
            assert value is None or limit.contains(value), f"learner.hparams.{key} = {value!r} accepted"


def test_the_defaults_meet_the_spec() -> None:
    assert set(SPEC) <= {f"{s}.{k}" for s, k in KEY_PATHS}
    assert_valid(load_config(environ={}))


# -- running the loader and judging what comes out ------------------------------------------------
COUNTS: dict[str, Counter[str]] = {}


@pytest.fixture(scope="module", autouse=True)
def report_counts(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print how many examples each test ran, past pytest's output capture (so also under -q)."""
    yield
    lines = [
        f"config fuzz: {name} ran {c['examples']} examples "
        f"({c['valid']} valid configs, {c['error']} ConfigErrors)"
        for name, c in COUNTS.items()
    ]
    lines.append(f"config fuzz: {sum(c['examples'] for c in COUNTS.values())} examples in all")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


def run(
    test: str, path: Path | None, overrides: Sequence[str] = (), environ: dict[str, str] | None = None
) -> Config | ConfigError:
    """Load, counting the example; return the Config or the ConfigError (anything else propagates)."""
    counts = COUNTS.setdefault(test, Counter())
    counts["examples"] += 1
    start = time.perf_counter()
    try:
        result: Config | ConfigError = load_config(
            path, overrides, environ={} if environ is None else environ
        )
        counts["valid"] += 1
    except ConfigError as exc:
        result = exc
        counts["error"] += 1
    elapsed = time.perf_counter() - start
    assert elapsed < SLOW_S, f"one load took {elapsed:.1f} s"
    return result


def assert_clean_error(err: ConfigError, sources: set[str]) -> None:
    """The message starts with the file (or the override) and, if it is about a key, the key."""
    message = str(err)
    assert err.source in sources, message
    assert message.startswith(f"{err.source}: "), message
    if err.key is not None:
        assert err.key, message
        assert message.startswith(f"{err.source}: {err.key}: "), message
        said = message[len(f"{err.source}: {err.key}: ") :]
        assert "expected" in said or said.startswith("set learner."), message


_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def split_key(key: str) -> list[str | int]:
    """``"model.hidden[1]"`` -> ``["model", "hidden", 1]``."""
    return [int(i) if i else name for name, i in _SEGMENT.findall(key)]


_MISSING = object()


def lookup(doc: Any, key: str) -> Any:
    """The value at ``key`` in ``doc`` (keys compared as text, the way messages print them)."""
    node = doc
    for seg in split_key(key):
        if isinstance(seg, int) and isinstance(node, list) and seg < len(node):
            node = node[seg]
        elif isinstance(node, dict) and any(str(k) == str(seg) for k in node):
            node = next(v for k, v in node.items() if str(k) == str(seg))
        else:
            return _MISSING
    return node


def declared(key: str) -> Any:
    """The annotation of a config key path, or None (unknown keys, hyper-parameters)."""
    segs = split_key(key)
    if not segs or segs[0] not in SECTIONS:
        return None
    tp: Any = SECTIONS[segs[0]]
    for seg in segs[1:]:
        if dataclasses.is_dataclass(tp) and isinstance(seg, str):
            tp = typing.get_type_hints(tp).get(seg)
        elif isinstance(seg, int) and typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        elif isinstance(seg, int) and list in [typing.get_origin(a) for a in typing.get_args(tp)]:
            tp = next(typing.get_args(a)[0] for a in typing.get_args(tp) if typing.get_origin(a) is list)
        else:
            return None
        if tp is None:
            return None
    return tp


# -- strategies ------------------------------------------------------------------------------------
class _Dumper(yaml.SafeDumper):
    """safe_dump, but integers too long for ``str()`` are written in hex (YAML reads both)."""


def _represent_int(dumper: yaml.SafeDumper, value: int) -> yaml.ScalarNode:
    return dumper.represent_scalar(
        "tag:yaml.org,2002:int", hex(value) if value.bit_length() > 1000 else str(value)
    )


_Dumper.add_representer(int, _represent_int)

WORDS = [
    "earliest", "latest", "fail", "mlp", "cnn", "cpu", "cuda", "cuda:1", "gpu", "PLAINTEXT", "SSL",
    "SASL_SSL", "embedded", "broker:9092", "", " ", "null", "~", "true", "no", "0x1F", "1_000", "1:30",
    "2001-12-14", ".nan", "-.inf", "*a", "&a", "!!python/object:os.system", "a: b", "- x", "{a: 1}",
    "[1, 2]", "'q'", "#c", "\t", "é", "\u2028", *LEARNERS, *ALL_NAMES,
]  # fmt: skip
#: (hypothesis prints examples, and Python prints no integer of more than 4300 digits)
BIG_INTS = [2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**65, 10**30, 10**400, 10**4000]

keys_text = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)
unknown_key = st.one_of(st.sampled_from(ALL_NAMES), keys_text, st.integers(-5, 5), st.booleans(), st.none())
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(BIG_INTS).flatmap(lambda n: st.sampled_from([n, -n, n + 1])),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(WORDS),
    st.dates(),
    st.binary(max_size=8),
)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(unknown_key, inner, max_size=3),
    max_leaves=8,
)
good_ints = st.one_of(
    st.integers(1, 5000),
    st.integers(-2, 70000),
    st.sampled_from([0, -1, 65535, 65536, 2**31 - 1, 2**31, 2**63, 2**64 - 1, -(2**64 - 1)]),
)
good_floats = st.one_of(
    st.floats(0.0001, 1000.0),
    st.integers(0, 100),
    st.sampled_from([0.0, -1.0, 1.0, math.nan, math.inf, 1e300]),
)


def plausible(tp: Any) -> st.SearchStrategy[Any]:
    """Values of (or near) the declared type, so that examples get past the type checks."""
    if tp is bool:
        return st.booleans()
    if tp is int:
        return good_ints
    if tp is float:
        return good_floats
    if tp is str:
        return st.one_of(st.sampled_from(WORDS), st.text(max_size=10))
    if tp is type(None):
        return st.none()
    if typing.get_origin(tp) is typing.Literal:
        return st.one_of(st.sampled_from(typing.get_args(tp)), st.sampled_from(WORDS))
    if typing.get_origin(tp) is list:
        return st.lists(plausible(typing.get_args(tp)[0]), max_size=4)
    if typing.get_origin(tp) is dict:
        return st.just({})  # the learner's hyper-parameters come from `learner_section`
    if typing.get_args(tp):
        return st.one_of(*(plausible(a) for a in typing.get_args(tp)))
    return anything


@st.composite
def entries(draw: st.DrawFn, hints: dict[str, Any], noise: float) -> dict[Any, Any]:
    """A section: some of its keys with plausible or arbitrary values, perhaps unknown keys."""
    out: dict[Any, Any] = {}
    for key in draw(st.lists(st.sampled_from(sorted(hints)), max_size=len(hints), unique=True)):
        arbitrary = draw(st.floats(0, 1)) < noise
        out[key] = draw(anything if arbitrary else plausible(hints[key]))
    if draw(st.floats(0, 1)) < noise:
        out.update(draw(st.dictionaries(unknown_key, anything, min_size=1, max_size=2)))
    return out


@st.composite
def learner_section(draw: st.DrawFn, noise: float) -> dict[Any, Any]:
    out = draw(entries(FIELDS["learner"], noise))
    name = draw(st.sampled_from(sorted(LEARNERS)))
    if draw(st.booleans()):
        out["name"] = name
    named = out.get("name", "mer")
    types = HPARAMS[named] if isinstance(named, str) and named in HPARAMS else HPARAMS[name]
    hparams: dict[Any, Any] = {}
    for key in draw(st.lists(st.sampled_from(sorted(types)), max_size=4, unique=True)):
        hparams[key] = draw(anything if draw(st.floats(0, 1)) < noise else plausible(types[key]))
    if draw(st.floats(0, 1)) < noise:  # names no learner has, or another learner's
        hparams.update(draw(st.dictionaries(unknown_key, anything, min_size=1, max_size=2)))
    if hparams or draw(st.booleans()):
        out["hparams"] = hparams
    return out


@st.composite
def near_miss_documents(draw: st.DrawFn) -> dict[Any, Any]:
    """A mapping shaped like a config, with wrong values, unknown keys and wrong nesting mixed in."""
    noise = draw(st.sampled_from([0.0, 0.0, 0.05, 0.3, 1.0]))
    doc: dict[Any, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=len(SECTIONS), unique=True)):
        if draw(st.floats(0, 1)) < noise / 5:
            doc[section] = draw(anything)  # a section that is not a mapping
        elif section == "learner":
            doc[section] = draw(learner_section(noise))
        else:
            doc[section] = draw(entries(FIELDS[section], noise))
    if draw(st.floats(0, 1)) < noise / 2:
        doc.update(draw(st.dictionaries(unknown_key, anything, min_size=1, max_size=2)))  # wrong nesting
    return doc


def dump(doc: Any, allow_unicode: bool = False) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=allow_unicode)


# yaml-shaped noise: fragments of YAML syntax, the schema's names and awkward scalars
FRAGMENTS = [
    ": ", ":", "- ", "-", "\n", "\n  ", "\n    ", "  ", "\t", "{", "}", "[", "]", ",", "? ", "|", ">",
    "'", '"', "#", "---\n", "...\n", "%YAML 1.1\n", "%TAG !p! tag:yaml.org,2002:python/\n", "&a ", "&b ",
    "*a", "*b", "<<: ", "!!python/object/apply:os.system ", "!!python/name:os.system", "!p!module:os",
    "!!str ", "!!int ", "!!float ", "!!timestamp ", "!!binary ", "!!set ", "!!omap ", "!custom ", "\ufeff",
    "\x00", "\x85", "0x", "0o", "0b", "9" * 30, "9" * 5000, "-0x" + "f" * 4000, ".nan", ".inf", "~", "null",
    "yes", "2001-13-45", "1:30", "1_0", "=", "\\", "\\u", "é", "😀", *ALL_NAMES, *LEARNERS,
]  # fmt: skip
yamlish = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)


@st.composite
def mutated_shipped(draw: st.DrawFn) -> str:
    """configs/mer.yaml with a few cuts, insertions and swaps."""
    text = SHIPPED
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        text = text[:i] + draw(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4))) + text[j:]
    return text


# -- 1. arbitrary bytes and text as a file ---------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-fuzz")


@settings(FUZZ, max_examples=600)
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=200), yamlish, mutated_shipped()))
def test_any_file_is_a_config_or_a_clean_error(fuzz_dir: Path, content: str | bytes) -> None:
    path = fuzz_dir / "arbitrary.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    result = run("any_file", path)
    if isinstance(result, ConfigError):
        assert_clean_error(result, {str(path)})
    else:
        assert_valid(result)


#: What the fuzzing found (each escaped as the exception named, or was accepted), kept as examples.
FOUND: list[tuple[str, str | bytes]] = [
    ("UnicodeDecodeError", b"\xff"),
    ("IndexError", "!!int"),
    ("IndexError", "kafka: {topic: !!float }"),
    ("KeyError", "kafka: {create_topics: !!bool x}"),
    ("AttributeError", "kafka: {topic: !!timestamp x}"),
    ("ValueError", "kafka: {topic: 2001-13-45}"),
    ("ValueError", "kafka: {topic: !!float abc}"),
    ("ValueError", "model: {n_inputs: " + "9" * 5000 + "}"),
    ("ValueError", "checkpoint: {keep: -0x" + "f" * 4000 + "}"),
    ("ValueError", "kafka:\n  ? 0x" + "f" * 4000 + "\n  : 1\n"),
    ("ValueError", "learner: {name: lamaml, hparams: {learn_lr: 0x" + "f" * 4000 + "}}"),
    ("OverflowError", "checkpoint: {every_seconds: " + "9" * 400 + "}"),
    ("RecursionError", "kafka: " + "[" * 3000 + "]" * 3000),
    ("accepted", "kafka: {topic: a, topic: b}"),
    ("accepted", "checkpoint: {every_seconds: .nan}"),
    ("accepted", "runtime: {log_every_seconds: -.inf}"),
    ("accepted", "evaluation: {drift_delta: 0}"),
    ("accepted", "model: {hidden: [100, -5]}"),
    ("accepted", "learner: {seed: -1}"),
    ("accepted", "learner: {alignment_every: -1}"),
    ("accepted", "learner: {device: gpu}"),
    ("accepted", "learner: {hparams: {lr: .inf}}"),
    ("accepted", "kafka: {session_timeout_ms: 0x80000000}"),
    ("accepted", "kafka: {poll_timeout_ms: -1}"),
    ("accepted", "kafka: {partitions: [-1]}"),
    ("accepted", "kafka: {topic: ''}"),
    ("accepted", "kafka: {security_protocol: TLS}"),
    ("accepted", "runtime: {max_examples: -5}"),
]


@pytest.mark.parametrize(("was", "content"), FOUND, ids=[f"{i}-{was}" for i, (was, _) in enumerate(FOUND)])
def test_what_the_fuzzing_found(fuzz_dir: Path, was: str, content: str | bytes) -> None:
    path = fuzz_dir / "found.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = run("found", path)
    assert isinstance(result, ConfigError)
    assert_clean_error(result, {str(path)})


# -- 2. documents shaped like a config -------------------------------------------------------------
@settings(FUZZ, max_examples=600)
@given(doc=near_miss_documents(), allow_unicode=st.booleans())
def test_near_miss_documents(fuzz_dir: Path, doc: dict[Any, Any], allow_unicode: bool) -> None:
    path = fuzz_dir / "near-miss.yaml"
    path.write_text(dump(doc, allow_unicode), encoding="utf-8")
    result = run("near_miss", path)
    if isinstance(result, ConfigError):
        assert_clean_error(result, {str(path)})
        # The error points at something that is in the file...
        assert result.key is not None, str(result)
        value = lookup(doc, result.key)
        assert value is not _MISSING, f"{result} names a key the document does not have"
        # ...and a value of the wrong type is reported with the declared type.
        tp = declared(result.key)
        if tp is not None and not conforms(value, tp) and not _has_big_int(value):
            expected = "mapping" if dataclasses.is_dataclass(tp) else type_name(tp)
            said = str(result)[len(f"{path}: {result.key}: ") :]
            assert said.startswith(f"expected {expected}, got {type(value).__name__} "), str(result)
        return
    assert_valid(result)
    # A valid config holds what the file says.
    for section, values in doc.items():
        for key, value in values.items():
            got = getattr(getattr(result, section), key)
            assert same(got, value), (section, key, value, got)


@settings(FUZZ, max_examples=300)
@given(name=st.sampled_from(sorted(LEARNERS)), noise=st.sampled_from([0.0, 0.1, 0.5]), data=st.data())
def test_learner_hparams(fuzz_dir: Path, name: str, noise: float, data: st.DataObject) -> None:
    """Every learner's hyper-parameters, known names with near or arbitrary values, unknown names."""
    types = HPARAMS[name]
    hparams: dict[Any, Any] = {}
    for key in data.draw(st.lists(st.sampled_from(sorted(types)), max_size=5, unique=True)):
        arbitrary = data.draw(st.floats(0, 1)) < noise
        hparams[key] = data.draw(anything if arbitrary else plausible(types[key]))
    if data.draw(st.floats(0, 1)) < noise:
        hparams.update(data.draw(st.dictionaries(unknown_key, anything, min_size=1, max_size=2)))
    doc = {"learner": {"name": name, "hparams": hparams}}
    path = fuzz_dir / "hparams.yaml"
    path.write_text(dump(doc), encoding="utf-8")
    result = run("hparams", path)
    if isinstance(result, ConfigError):
        assert_clean_error(result, {str(path)})
        assert result.key is not None and result.key.startswith("learner.hparams"), str(result)
        assert lookup(doc, result.key) is not _MISSING, f"{result} names a key the document does not have"
        return
    assert_valid(result)
    assert result.learner.name == name
    assert all(same(result.learner.hparams[k], v) for k, v in hparams.items())


def _has_big_int(value: Any) -> bool:
    if isinstance(value, int):
        return value.bit_length() > 64
    if isinstance(value, dict):
        return any(_has_big_int(k) or _has_big_int(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_big_int(v) for v in value)
    return False


# -- 3. YAML's own hazards -------------------------------------------------------------------------
def _laughs(levels: int, width: int) -> str:
    """A "billion laughs" value: ``width ** levels`` strings once the aliases are expanded."""
    lines = [f"[&l0 [{', '.join(['lol'] * width)}]"]
    lines += [f", &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "".join(lines) + "]"


BOMB_PLACES = [
    "kafka:\n  topic: {bomb}\n",
    "model:\n  hidden: {bomb}\n",
    "learner:\n  hparams:\n    lr: {bomb}\n",
    "learner:\n  hparams:\n    nonsense: {bomb}\n",
    "learner:\n  hparams: {{x: {bomb}}}\n",
    "checkpoint: {bomb}\n",
    "unknown_section: {bomb}\n",
    "{bomb}\n",
]


@pytest.mark.parametrize("template", BOMB_PLACES)
def test_billion_laughs_is_refused_in_bounded_time_and_memory(fuzz_dir: Path, template: str) -> None:
    path = fuzz_dir / "bomb.yaml"
    path.write_text(template.format(bomb=_laughs(levels=9, width=10)))  # 10**9 values expanded
    tracemalloc.start()
    try:
        result = run("billion_laughs", path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, ConfigError)
    assert_clean_error(result, {str(path)})
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MiB"


@settings(FUZZ, max_examples=60)
@given(levels=st.integers(1, 12), width=st.integers(1, 12), where=st.sampled_from(BOMB_PLACES))
def test_alias_fanout_any_size(fuzz_dir: Path, levels: int, width: int, where: str) -> None:
    path = fuzz_dir / "fanout.yaml"
    path.write_text(where.format(bomb=_laughs(levels, width)))
    result = run("alias_fanout", path)
    assert isinstance(result, ConfigError)  # lists of strings fit none of these places
    assert_clean_error(result, {str(path)})


PYTHON_TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:subprocess.call [['touch', '{marker}']]",
    "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    '!!python/object/apply:builtins.exec [\'open("{marker}", "w")\']',
    "!!python/object:streamlearn.config.KafkaConfig {{topic: x}}",
    "!!python/name:os.system",
    "!!python/module:os",
    "!<tag:yaml.org,2002:python/object/apply:os.system> ['touch {marker}']",
    "!p!object/apply:os.system ['touch {marker}']",
    "!custom x",
]


@pytest.mark.parametrize("tag", PYTHON_TAGS)
@pytest.mark.parametrize("where", ["file", "environment", "--set"])
def test_python_tags_are_refused_and_never_run(fuzz_dir: Path, tag: str, where: str) -> None:
    marker = fuzz_dir / "tag-ran"
    value = tag.format(marker=marker)
    path = fuzz_dir / "tags.yaml"
    header = "%TAG !p! tag:yaml.org,2002:python/\n---\n" if "!p!" in tag else ""
    path.write_text(header + (f"kafka:\n  topic: {value}\n" if where == "file" else "kafka: {}\n"))
    env = {"STREAMLEARN__MODEL__N_INPUTS": value} if where == "environment" else {}
    overrides = [f"model.n_inputs={value}"] if where == "--set" else []
    result = run("python_tags", path, overrides, env)
    assert not marker.exists(), "a YAML tag ran code"
    assert isinstance(result, ConfigError)
    assert_clean_error(result, {str(path), "environment STREAMLEARN__MODEL__N_INPUTS", "command line"})


@settings(FUZZ, max_examples=80)
@given(
    section_key=st.sampled_from(KEY_PATHS),
    first=st.sampled_from(["a", "1", "true", "[1]"]),
    second=st.sampled_from(["b", "2", "false", "{}"]),
    flow=st.booleans(),
)
def test_a_key_given_twice_is_refused(
    fuzz_dir: Path, section_key: tuple[str, str], first: str, second: str, flow: bool
) -> None:
    section, key = section_key
    path = fuzz_dir / "dup.yaml"
    if flow:
        path.write_text(f"{section}: {{{key}: {first}, {key}: {second}}}\n")
    else:
        path.write_text(f"{section}:\n  {key}: {first}\n  {key}: {second}\n")
    result = run("duplicate_keys", path)
    assert isinstance(result, ConfigError)
    assert_clean_error(result, {str(path)})
    assert "twice" in str(result)


@pytest.mark.parametrize("text", ["kafka: {}\nkafka: {}\n", "learner:\n  hparams: {lr: 1, lr: 2}\n"])
def test_duplicate_sections_and_hparams_are_refused(fuzz_dir: Path, text: str) -> None:
    path = fuzz_dir / "dup2.yaml"
    path.write_text(text)
    result = run("duplicate_keys", path)
    assert isinstance(result, ConfigError) and "twice" in str(result)


def test_merge_keys_may_be_overridden(fuzz_dir: Path) -> None:
    path = fuzz_dir / "merge.yaml"
    path.write_text("kafka:\n  <<: {topic: a, group_id: g}\n  topic: b\n")
    cfg = run("merge_keys", path)
    assert isinstance(cfg, Config) and (cfg.kafka.topic, cfg.kafka.group_id) == ("b", "g")
    path.write_text("kafka: &k {<<: *k}\n")  # merging itself: PyYAML drops the merge key first
    assert run("merge_keys", path) == Config()


@pytest.mark.parametrize(
    "text",
    [
        "kafka: {}\n---\nmodel: {}\n",
        "---\nkafka: {}\n...\n---\n",
        "--- 1\n--- 2\n",
        "%YAML 1.1\n---\nkafka: {}\n---\n",
        "kafka: &k {topic: {<<: *k}}\n",  # a merge key that makes a mapping contain itself
        "kafka: &k [*k]\n",  # a list containing itself
        "kafka: &k {topic: *k}\n",
    ],
)
def test_multi_document_and_self_containing_streams(fuzz_dir: Path, text: str) -> None:
    path = fuzz_dir / "streams.yaml"
    path.write_text(text)
    result = run("streams", path)
    assert isinstance(result, ConfigError), text
    assert_clean_error(result, {str(path)})


def _nested(kind: str, depth: int) -> str:
    if kind == "flow-seq":
        return "kafka: " + "[" * depth + "]" * depth + "\n"
    if kind == "flow-map":
        return "kafka: " + "{a: " * depth + "1" + "}" * depth + "\n"
    if kind == "block-map":
        return "".join(f"{'  ' * i}k{i}:\n" for i in range(depth)) + "  " * depth + "x\n"
    if kind == "block-seq":
        return "kafka:\n" + "".join(f"{'  ' * (i + 1)}-\n" for i in range(depth)) + "  " * (depth + 1) + "x\n"
    assert kind == "hparams"
    return "learner:\n  hparams:\n    lr: " + "[" * depth + "]" * depth + "\n"


@pytest.mark.parametrize("kind", ["flow-seq", "flow-map", "block-map", "block-seq", "hparams"])
@pytest.mark.parametrize("depth", [MAX_DEPTH - 4, MAX_DEPTH + 1, 1000, 100_000])
def test_deep_nesting_is_a_clean_error(fuzz_dir: Path, kind: str, depth: int) -> None:
    if kind.startswith("block") and depth > 1000:
        depth = 2000  # indentation grows with the square of the depth
    path = fuzz_dir / "deep.yaml"
    path.write_text(_nested(kind, depth))
    result = run("deep_nesting", path)
    assert isinstance(result, ConfigError)  # no config key holds nested lists or mappings
    assert_clean_error(result, {str(path)})


# -- 4. environment and --set overrides ------------------------------------------------------------
override_text = st.one_of(
    st.text(st.characters(exclude_characters=["\x00"]), max_size=20),  # surrogates included, as in os.environ
    st.sampled_from(WORDS),
    st.sampled_from(FRAGMENTS),
    scalars.map(lambda v: dump(v).removesuffix("\n...\n").strip()),
    anything.map(lambda v: yaml.dump(v, Dumper=_Dumper, default_flow_style=True).strip()),
)
key_paths = st.one_of(
    st.sampled_from([f"{s}.{k}" for s, k in KEY_PATHS]),
    st.sampled_from(sorted(SECTIONS)),
    st.sampled_from(sorted(HPARAMS["mer"])).map(lambda k: f"learner.hparams.{k}"),
    st.lists(st.one_of(st.sampled_from(ALL_NAMES), keys_text, st.just("")), min_size=0, max_size=4).map(
        ".".join
    ),
)


assignments = st.builds(
    lambda k, v: f"{k}={v}", st.one_of(key_paths, st.sampled_from(KEY_PATHS).map(".".join)), override_text
)


def env_name(path: str, lower: bool) -> str:
    name = "STREAMLEARN__" + path.replace(".", "__")
    return name if lower else name.upper()


@settings(FUZZ, max_examples=400)
@given(
    env=st.dictionaries(
        st.one_of(
            st.builds(env_name, key_paths, st.booleans()),
            st.text(st.characters(exclude_characters=["\x00", "="]), min_size=1, max_size=20),
        ),
        override_text,
        max_size=4,
    )
)
def test_environment_overrides(fuzz_dir: Path, env: dict[str, str]) -> None:
    path = fuzz_dir / "base.yaml"
    path.write_text(SHIPPED)
    result = run("environment", path, [], env)
    if isinstance(result, ConfigError):
        assert_clean_error(result, {str(path)} | {f"environment {name}" for name in env})
        return
    assert_valid(result)
    targets = [_env_target(name) for name in env if name.startswith("STREAMLEARN__")]
    for name, raw in env.items():
        target = _env_target(name)
        if not name.startswith("STREAMLEARN__") or len(target) != 2 or target[0] not in FIELDS:
            continue
        if sum(t[: len(target)] == target or target[: len(t)] == t for t in targets) > 1:
            continue  # another variable sets the same key or a section around it
        _assert_holds(result, target, raw)


def _env_target(name: str) -> list[str]:
    return [p for p in name[len("STREAMLEARN__") :].lower().replace("__", ".").split(".") if p]


def _assert_holds(cfg: Config, target: list[str], raw: str) -> None:
    """The key holds the text read as YAML, or (a string key) the text itself."""
    got = getattr(getattr(cfg, target[0]), target[1])
    try:
        read = yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError):
        read = raw
    assert same(got, read) or got == raw, (target, raw, got)


def same(loaded: Any, written: Any) -> bool:
    """The loaded value is the written one (an integer written for a float key is that float)."""
    if type(loaded) is float and type(written) is int:
        return loaded == float(written)
    return type(loaded) is type(written) and loaded == written


@settings(FUZZ, max_examples=400)
@given(
    items=st.one_of(
        st.lists(assignments, max_size=3),
        st.lists(st.one_of(assignments, st.text(max_size=20)), min_size=1, max_size=3),  # perhaps no "="
    )
)
def test_set_overrides(fuzz_dir: Path, items: list[str]) -> None:
    path = fuzz_dir / "base.yaml"
    path.write_text(SHIPPED)
    result = run("--set", path, items, {})
    if isinstance(result, ConfigError):
        assert_clean_error(result, {str(path), "command line"})
        return
    assert_valid(result)
    last: dict[tuple[str, ...], str] = {}
    for item in items:
        key, _, raw = item.partition("=")
        target = tuple(p for p in key.strip().split(".") if p)
        for t in list(last):
            if t[: len(target)] == target or target[: len(t)] == t:
                del last[t]
        last[target] = raw
    for target, raw in last.items():
        if len(target) == 2 and target[0] in FIELDS and target[1] in FIELDS[target[0]]:
            _assert_holds(result, list(target), raw)


def test_string_keys_take_override_text_as_it_is(fuzz_dir: Path) -> None:
    env = {
        "STREAMLEARN__KAFKA__SASL_PLAIN_PASSWORD": "123456",
        "STREAMLEARN__KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",  # a password needs SASL (load check)
        "STREAMLEARN__SERVE__AUTH_TOKEN": "*s3cret: {x",
        "STREAMLEARN__KAFKA__GROUP_ID": "'quoted'",
        "STREAMLEARN__KAFKA__SASL_MECHANISM": "null",
    }
    cfg = run("string_overrides", None, ["kafka.topic=2001-13-45", "serve.host=yes"], env)
    assert isinstance(cfg, Config)
    assert cfg.kafka.sasl_plain_password == "123456"
    assert cfg.serve.auth_token == "*s3cret: {x"
    assert cfg.kafka.group_id == "quoted"  # YAML read it as a string: that is kept
    assert cfg.kafka.sasl_mechanism is None
    assert (cfg.kafka.topic, cfg.serve.host) == ("2001-13-45", "yes")
    bad = run("string_overrides", None, [], {"STREAMLEARN__KAFKA__TOPIC": "bad\udcff"})
    assert isinstance(bad, ConfigError) and str(bad).startswith("environment STREAMLEARN__KAFKA__TOPIC: ")
    bad = run("string_overrides", None, [], {"STREAMLEARN__MODEL__N_INPUTS": "!!int"})  # was IndexError
    assert isinstance(bad, ConfigError) and str(bad).startswith("environment STREAMLEARN__MODEL__N_INPUTS: ")

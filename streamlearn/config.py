"""Configuration: YAML mapped onto typed dataclasses, validated on load.

Precedence, lowest to highest: defaults < YAML file < environment < ``--set`` flags.
Environment overrides use ``STREAMLEARN__SECTION__KEY`` (double underscores separate the path),
e.g. ``STREAMLEARN__KAFKA__BOOTSTRAP_SERVERS=broker:9092``; values are read as YAML scalars, except
that a string key takes the text as it is where YAML would read something else (a password
``123456``, ``*secret`` or ``a: b`` stays that text).

The YAML is read safely and within bounds: only plain data tags (``!!python/...`` is refused, never
run), one document, no key twice in a mapping, at most ``MAX_DEPTH`` levels, ``MAX_VALUES`` values
once aliases are expanded (a "billion laughs" document is refused, not expanded) and integers of at
most ``MAX_INT_BITS`` bits.

Every error names the file, the key path and the expected type — an operator fixes it without
reading code:

>>> load_config_dict({"kafka": {"topic": 5}}, source="demo.yaml")
Traceback (most recent call last):
...
streamlearn.errors.ConfigError: demo.yaml: kafka.topic: expected str, got int 5
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import reprlib
import types
import typing
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node
from yaml.reader import ReaderError

from streamlearn.errors import ConfigError

ENV_PREFIX = "STREAMLEARN__"

#: Bounds on a document. A config is a few dozen values at most four levels deep; YAML aliases let
#: a few lines stand for billions of values or for a structure that contains itself.
MAX_DEPTH = 32
MAX_VALUES = 10_000
#: No setting needs more (the seed is the widest); Python cannot even print a 4300-digit integer.
MAX_INT_BITS = 64
_INT32_MAX = 2**31 - 1


@dataclass
class KafkaConfig:
    #: "embedded" starts a local tansu broker (demo, tests); otherwise "host:port[,host:port]".
    bootstrap_servers: str = "embedded"
    topic: str = "examples"
    dead_letter_topic: str = "examples.dead-letter"
    group_id: str = "streamlearn"
    #: partitions of `topic` this learner owns; null = all of them (one learner = one writer).
    partitions: list[int] | None = None
    #: where to start when neither a checkpoint nor a committed offset exists: earliest | latest.
    auto_offset_reset: str = "earliest"
    #: what to do when a checkpointed offset no longer exists on the broker (retention, topic
    #: recreated): "fail" stops with a clear error; "earliest"/"latest" reset explicitly.
    offset_out_of_range: str = "fail"
    poll_timeout_ms: int = 200
    #: a message longer than this is dead-lettered as "oversized" without being parsed.
    max_message_bytes: int = 1_048_576
    max_poll_records: int = 100
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    #: passed through to kafka-python: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: create the topics if missing (embedded broker, dev clusters); production topics are managed.
    create_topics: bool = True


@dataclass
class ModelConfig:
    kind: str = "mlp"
    n_inputs: int = 784
    n_classes: int = 10
    hidden: list[int] = field(default_factory=lambda: [100, 100])


@dataclass
class LearnerConfig:
    name: str = "mer"
    #: micro-batch size; null = the learner's own default (1 for mer/er/sgd, 10 for lamaml/cmaml).
    batch_size: int | None = None
    device: str = "cpu"
    seed: int = 0
    #: measure gradient alignment every N updates (two extra gradients; every 50 costs ~1% of MER's time).
    alignment_every: int = 50
    #: the learner's keyword arguments, same names (validated against the learner).
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckpointConfig:
    dir: str = "runs/checkpoints"
    every_examples: int = 2000
    every_seconds: float = 60.0
    keep: int = 3


@dataclass
class EvaluationConfig:
    window: int = 1000
    drift_delta: float = 0.002


@dataclass
class RuntimeConfig:
    threads: int = 1
    log_every_seconds: float = 10.0
    #: stop after learning this many examples (demo and tests); null = run until stopped.
    max_examples: int | None = None


@dataclass
class ServeConfig:
    #: serve predictions and /metrics from a separate process while learning.
    enabled: bool = True
    #: 127.0.0.1 by default; containers set 0.0.0.0.
    host: str = "127.0.0.1"
    port: int = 8080
    #: the model name in the Open Inference Protocol paths (/v2/models/{name}).
    model_name: str = "streamlearn"
    #: publish the model snapshot to the server every N updates (and at least once a second).
    publish_every: int = 10
    #: requests with a larger body are refused with 413.
    max_request_bytes: int = 4 * 1024 * 1024
    #: rows per prediction request at most (400 beyond).
    max_rows: int = 1024
    #: when set, /predict and /v2/models/{name}/infer require "Authorization: Bearer <token>".
    auth_token: str | None = None
    #: open connections at most; at the cap the longest-waiting idle or incomplete one is closed.
    max_connections: int = 128
    #: a request must arrive in full (line, headers, body) within this many seconds of the wait.
    request_timeout_seconds: float = 10.0


@dataclass
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    #: where the values came from, for messages; not a config key.
    source: str = field(default="<defaults>", compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    def fingerprint(self) -> str:
        """Hash of what decides the learned model (model, learner); a checkpoint records it."""
        key = {"model": dataclasses.asdict(self.model), "learner": dataclasses.asdict(self.learner)}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# -- reading YAML -------------------------------------------------------------------------------
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``, with the edges of hand-written and hostile files made into YAML errors.

    PyYAML keeps the last of two equal keys silently, recurses once per nesting level (a few
    thousand brackets are a RecursionError), and lets a scalar it cannot build escape as
    ValueError, IndexError, KeyError... (``2001-13-45``, ``!!float x``, ``!!int`` alone, a
    5000-digit integer).
    """

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text)
        self.name = name
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            # PyYAML's scalar constructors fail on odd scalars with these: "!!int" alone is an
            # IndexError, "!!bool x" a KeyError, "!!timestamp x" an AttributeError.
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            detail = f" ({exc})" if type(exc) is ValueError else ""
            message = f"cannot read {_show(node.value)} as {tag}{detail}"
            raise ConstructorError(None, None, message, node.start_mark) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, MappingNode):  # else ("!!set x") the base class says what is wrong
            self._refuse_repeated_keys(node, deep)
        return super().construct_mapping(node, deep)

    def _refuse_repeated_keys(self, node: MappingNode, deep: bool) -> None:
        # Keys merged in with ``<<`` may be overridden (that is what merging is for); keys written
        # in the mapping itself may not repeat.
        written = [key_node for key_node, _ in node.value if key_node.tag != _MERGE_TAG]
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node in written:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # unhashable: the base class refuses it with its position
                continue
            if repeated:
                raise ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {_show(key)} twice",
                    key_node.start_mark,
                )


def _parse_yaml(text: str, name: str) -> Any:
    """One YAML document of plain data; any problem with it is a ``yaml.YAMLError``."""
    loader = _Loader(text, name)
    try:
        return loader.get_single_data()
    except RecursionError:  # a backstop: nesting is bounded above, so no known input gets here
        raise yaml.YAMLError("nested too deeply to read") from None
    finally:
        loader.dispose()


def _check_bounds(data: Any, source: str) -> None:
    """Refuse what no config is before anything walks, copies or prints it (iteratively: a
    structure that contains itself is just one that is too deep)."""
    count = 0
    todo: list[tuple[Any, str, int]] = [(data, "", 0)]
    while todo:
        value, path, depth = todo.pop()
        count += 1
        key = path or None
        if count > MAX_VALUES:
            raise ConfigError(
                f"expected at most {MAX_VALUES} values in all (YAML aliases repeat what they name), got more",
                source=source,
                key=key,
            )
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"expected at most {MAX_DEPTH} levels of nesting, got more", source=source, key=key
            )
        if _too_wide(value):
            raise ConfigError(_wide_text(value), source=source, key=key)
        if isinstance(value, Mapping):
            for k, v in value.items():
                if _too_wide(k):
                    raise ConfigError(f"a key: {_wide_text(k)}", source=source, key=key)
                todo.append((v, f"{path}.{k}" if path else str(k), depth + 1))
        elif isinstance(value, list | tuple | set | frozenset):
            todo.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))


def _too_wide(value: Any) -> bool:
    return isinstance(value, int) and value.bit_length() > MAX_INT_BITS


def _wide_text(value: int) -> str:
    return f"expected an integer of at most {MAX_INT_BITS} bits, got one of {value.bit_length()} bits"


class _ShortRepr(reprlib.Repr):
    """``repr`` cut to a length a message can carry (the value may be a long string or a big list)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 80
        self.maxlevel = 3

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > MAX_INT_BITS:  # repr() refuses integers of more than 4300 digits
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_show = _ShortRepr().repr


# -- validation ---------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, Sequence):
        (inner,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(inner)}"
    if origin in (dict, Mapping):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str, source: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints are accepted where floats are expected."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for alt in typing.get_args(tp):
            try:
                return _coerce(value, alt, path, source)
            except ConfigError:
                continue
        raise _bad(value, tp, path, source)
    if tp is type(None):
        if value is None:
            return None
        raise _bad(value, tp, path, source)
    if origin is list:
        if not isinstance(value, list):
            raise _bad(value, tp, path, source)
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _bad(value, tp, path, source)
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _bad(value, tp, path, source, expected="mapping")
        return _build(tp, value, path, source)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # at most MAX_INT_BITS bits (checked on load), so it fits a float
    if tp in (int, float) and isinstance(value, bool):
        raise _bad(value, tp, path, source)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _bad(value, tp, path, source)


def _bad(value: Any, tp: Any, path: str, source: str, expected: str | None = None) -> ConfigError:
    return ConfigError(
        f"expected {expected or _type_name(tp)}, got {type(value).__name__} {_show(value)}",
        source=source,
        key=path,
    )


def _build(cls: Any, data: Mapping[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown key; expected one of {', '.join(names)}", source=source, key=path)
        kwargs[key] = _coerce(value, hints[key], path, source)
    return cls(**kwargs)


#: (key, lowest, highest or None): integers with a range beyond their type. Kafka sends the
#: timeouts and partition numbers as 32-bit integers; the seed seeds 64-bit generators.
_INT_RANGES: tuple[tuple[str, int, int | None], ...] = (
    ("kafka.poll_timeout_ms", 0, _INT32_MAX),
    ("kafka.max_poll_records", 1, _INT32_MAX),
    ("kafka.max_message_bytes", 1, _INT32_MAX),
    ("kafka.session_timeout_ms", 1, _INT32_MAX),
    ("kafka.heartbeat_interval_ms", 1, _INT32_MAX),
    ("kafka.partitions[]", 0, _INT32_MAX),
    ("model.n_inputs", 1, None),
    ("model.n_classes", 1, None),
    ("model.hidden[]", 1, None),
    ("learner.batch_size", 1, None),
    ("learner.seed", 0, 2**64 - 1),
    ("learner.alignment_every", 0, None),
    ("checkpoint.every_examples", 1, None),
    ("checkpoint.keep", 1, None),
    ("evaluation.window", 1, None),
    ("runtime.threads", 1, None),
    ("runtime.max_examples", 0, None),
    ("serve.port", 0, 65535),
    ("serve.publish_every", 1, None),
    ("serve.max_request_bytes", 1, None),
    ("serve.max_rows", 1, None),
    ("serve.max_connections", 1, 65535),
)
_CHOICES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kafka.auto_offset_reset", ("earliest", "latest")),
    ("kafka.offset_out_of_range", ("fail", "earliest", "latest")),
    ("kafka.security_protocol", ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")),
    ("model.kind", ("mlp", "cnn")),
)
_NON_EMPTY: tuple[str, ...] = (
    "kafka.bootstrap_servers",
    "kafka.topic",
    "kafka.dead_letter_topic",
    "kafka.group_id",
    "serve.model_name",
)


def _values_at(cfg: Config, key: str) -> list[tuple[str, Any]]:
    """``[(path, value)]`` for ``section.name``, or one per item for ``section.name[]``."""
    section, name = key.removesuffix("[]").split(".")
    value = getattr(getattr(cfg, section), name)
    if not key.endswith("[]"):
        return [(key, value)]
    return [(f"{section}.{name}[{i}]", item) for i, item in enumerate(value or ())]


def _range_text(lowest: int, highest: int | None, value: int) -> str:
    if highest is not None:
        return f"expected an integer in {lowest}..{highest}, got {value}"
    return f"expected a {'positive' if lowest == 1 else 'non-negative'} integer, got {value}"


def _check_values(cfg: Config) -> None:
    """Checks that types alone cannot express."""
    src = cfg.source
    for key, allowed in _CHOICES:
        for path, value in _values_at(cfg, key):
            if value not in allowed:
                raise ConfigError(
                    f"expected one of {', '.join(allowed)}, got {_show(value)}", source=src, key=path
                )
    for key in _NON_EMPTY:
        for path, value in _values_at(cfg, key):
            if not value.strip():
                raise ConfigError(f"expected a non-empty string, got {_show(value)}", source=src, key=path)
    token = cfg.serve.auth_token
    if token is not None and (len(token) < 8 or token != token.strip()):
        # "" would turn auth on with a token anyone sends ("Authorization: Bearer ")
        raise ConfigError(
            "expected null (no auth) or a token of at least 8 characters without surrounding spaces",
            source=src,
            key="serve.auth_token",
        )
    for key, lowest, highest in _INT_RANGES:
        for path, number in _values_at(cfg, key):
            if number is not None and not (lowest <= number and (highest is None or number <= highest)):
                raise ConfigError(_range_text(lowest, highest, number), source=src, key=path)
    seconds = {
        "checkpoint.every_seconds": cfg.checkpoint.every_seconds,
        "runtime.log_every_seconds": cfg.runtime.log_every_seconds,
    }
    for path, number in seconds.items():
        if not (math.isfinite(number) and number >= 0):
            raise ConfigError(
                f"expected a non-negative number of seconds, got {number}", source=src, key=path
            )
    delta = cfg.evaluation.drift_delta
    if not 0 < delta < 1:  # ADWIN's confidence; also false for nan
        raise ConfigError(
            f"expected a number between 0 and 1 (exclusive), got {delta}",
            source=src,
            key="evaluation.drift_delta",
        )
    import torch  # here: importing the config must stay cheap

    from streamlearn.ingest.kafka_options import check_security
    from streamlearn.learners import validate_hparams

    check_security(cfg.kafka, source=src)  # once here, so the message names the file

    try:
        torch.device(cfg.learner.device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"expected a torch device such as cpu, cuda or cuda:1, got {_show(cfg.learner.device)} ({exc})",
            source=src,
            key="learner.device",
        ) from None
    for key in ("device", "seed", "alignment_every"):
        if key in cfg.learner.hparams:
            raise ConfigError(f"set learner.{key} instead", source=src, key=f"learner.hparams.{key}")
    validate_hparams(cfg.learner.name, cfg.learner.hparams, source=src, prefix="learner.hparams.")
    for key, value in cfg.learner.hparams.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"expected a finite number, got {value}", source=src, key=f"learner.hparams.{key}"
            )


def _set_path(data: dict[str, Any], parts: Sequence[str], value: Any, where: str) -> None:
    """Set ``data[parts[0]][parts[1]]... = value``; ``where`` names the override in messages."""
    if not parts:
        raise ConfigError("expected a key path such as kafka.topic, got an empty one", source=where)
    node = data
    for i, p in enumerate(parts[:-1]):
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"expected a section (a mapping) at {'.'.join(parts[: i + 1])}, got {type(child).__name__}",
                source=where,
                key=".".join(parts),
            )
        node = child
    node[parts[-1]] = value


def _declared_type(parts: Sequence[str]) -> Any:
    """The annotation of the config key ``parts`` (``["kafka", "topic"]``), or None if there is none."""
    tp: Any = Config
    for part in parts:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part == "source" or part not in hints:
            return None
        tp = hints[part]
    return tp


def _override(raw: str, parts: Sequence[str], where: str) -> Any:
    """An environment or ``--set`` value: a YAML scalar, except that a string key takes the text
    itself where YAML reads something else (a token ``123456``, a password ``*x`` or ``a: b``)."""
    tp = _declared_type(parts)
    is_union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    takes_text = tp is str or (is_union and str in typing.get_args(tp))
    try:
        value = _parse_yaml(raw, where)
    except ReaderError:  # characters no config may hold (control, invalid UTF-8)
        raise ConfigError(f"cannot parse value {_show(raw)}", source=where) from None
    except yaml.YAMLError:
        if takes_text:
            return raw
        raise ConfigError(f"cannot parse value {_show(raw)}", source=where) from None
    if takes_text:
        try:
            _check_bounds(value, where)
            _coerce(value, tp, ".".join(parts), where)
        except ConfigError:
            return raw
    return value


def load_config_dict(data: Mapping[str, Any] | None, source: str = "<dict>") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the top level must be a mapping of sections, got {type(data).__name__}", source=source
        )
    _check_bounds(data, source)
    cfg: Config = _build(Config, data, "", source)
    cfg.source = source
    _check_values(cfg)
    return cfg


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load ``path`` (or defaults), apply env and ``key.path=value`` overrides, validate."""
    environ = os.environ if environ is None else environ
    source = str(path) if path is not None else "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file: {exc.strerror or exc}", source=source) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", source=source) from None
        try:
            loaded = _parse_yaml(text, source)
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {exc}", source=source) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"the top level must be a mapping of sections, got {type(loaded).__name__}", source=source
            )
        data = loaded or {}
    for name, raw_value in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            parts = _key_parts(name[len(ENV_PREFIX) :].lower().replace("__", "."))
            where = f"environment {name}"
            _set_path(data, parts, _override(raw_value, parts, where), where)
    for item in overrides:
        key, sep, raw_value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key.path=value, got {_show(item)}", source="command line")
        parts = _key_parts(key.strip())
        _set_path(data, parts, _override(raw_value, parts, "command line"), "command line")
    return load_config_dict(data, source=source)


def _key_parts(path: str) -> list[str]:
    return [p for p in path.split(".") if p]

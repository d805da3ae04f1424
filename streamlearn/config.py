"""Configuration: YAML mapped onto typed dataclasses, validated on load.

Precedence, lowest to highest: defaults < YAML file < environment < ``--set`` flags.
Environment overrides use ``STREAMLEARN__SECTION__KEY`` (double underscores separate the path),
e.g. ``STREAMLEARN__KAFKA__BOOTSTRAP_SERVERS=broker:9092``; values are read as YAML scalars.

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
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streamlearn.errors import ConfigError

ENV_PREFIX = "STREAMLEARN__"


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
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise _bad(value, tp, path, source)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _bad(value, tp, path, source)


def _bad(value: Any, tp: Any, path: str, source: str, expected: str | None = None) -> ConfigError:
    return ConfigError(
        f"expected {expected or _type_name(tp)}, got {type(value).__name__} {value!r}",
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


def _check_values(cfg: Config) -> None:
    """Checks that types alone cannot express."""
    src = cfg.source
    choices = {
        "kafka.auto_offset_reset": (cfg.kafka.auto_offset_reset, ("earliest", "latest")),
        "kafka.offset_out_of_range": (cfg.kafka.offset_out_of_range, ("fail", "earliest", "latest")),
        "model.kind": (cfg.model.kind, ("mlp", "cnn")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"expected one of {', '.join(allowed)}, got {value!r}", source=src, key=key)
    positive: dict[str, int] = {
        "model.n_inputs": cfg.model.n_inputs,
        "model.n_classes": cfg.model.n_classes,
        "checkpoint.keep": cfg.checkpoint.keep,
        "checkpoint.every_examples": cfg.checkpoint.every_examples,
        "evaluation.window": cfg.evaluation.window,
        "runtime.threads": cfg.runtime.threads,
        "kafka.max_poll_records": cfg.kafka.max_poll_records,
        "serve.publish_every": cfg.serve.publish_every,
        "serve.max_request_bytes": cfg.serve.max_request_bytes,
        "serve.max_rows": cfg.serve.max_rows,
    }
    if cfg.learner.batch_size is not None:
        positive["learner.batch_size"] = cfg.learner.batch_size
    for name, number in positive.items():
        if number < 1:
            raise ConfigError(f"expected a positive integer, got {number}", source=src, key=name)
    if not 0 <= cfg.serve.port <= 65535:
        raise ConfigError(
            f"expected a port number 0..65535, got {cfg.serve.port}", source=src, key="serve.port"
        )
    from streamlearn.learners import validate_hparams

    for key in ("device", "seed", "alignment_every"):
        if key in cfg.learner.hparams:
            raise ConfigError(f"set learner.{key} instead", source=src, key=f"learner.hparams.{key}")
    validate_hparams(cfg.learner.name, cfg.learner.hparams, source=src, prefix="learner.hparams.")


def _set_path(data: dict[str, Any], path: str, value: Any, source: str) -> None:
    parts = [p for p in path.split(".") if p]
    if not parts:
        raise ConfigError("empty key", source=source, key=path)
    node = data
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError("is not a section", source=source, key=path)
        node = child
    node[parts[-1]] = value


def load_config_dict(data: Mapping[str, Any] | None, source: str = "<dict>") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the top level must be a mapping of sections, got {type(data).__name__}", source=source
        )
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
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file: {exc.strerror}", source=source) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {exc}", source=source) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"the top level must be a mapping of sections, got {type(loaded).__name__}", source=source
            )
        data = loaded or {}
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            _set_path(data, key, _scalar(raw, f"environment {name}"), source)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key.path=value, got {item!r}", source="command line")
        _set_path(data, key.strip(), _scalar(raw, "command line"), source)
    return load_config_dict(data, source=source)


def _scalar(raw: str, where: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"cannot parse value {raw!r}", source=where) from None

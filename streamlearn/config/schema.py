"""The configuration's keys: one dataclass per section, each field with its type, default and limits.

A field's limits are part of its annotation (``Annotated[int, Range(1)]``, ``Literal[...]`` for
choices, ``NonEmpty()``, ``Pattern(...)``); ``streamlearn.typecheck`` reads and enforces them when a
config loads. Rules that involve more than one field are in ``streamlearn.config.rules``.
Kafka sends timeouts and partition numbers as 32-bit integers, hence ``INT32_MAX``.

>>> Config().serve.max_connections
128
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from streamlearn.bounds import (
    INT32_MAX,
    NonEmpty,
    NonNegativeFloat,
    NonNegativeInt,
    Pattern,
    PositiveFloat,
    PositiveInt,
    Range,
)

Text = Annotated[str, NonEmpty()]
Int32 = Annotated[int, Range(1, INT32_MAX)]
Port = Annotated[int, Range(0, 65535)]
#: torch's names for the devices a learner can run on; checked without importing torch (slow).
Device = Annotated[
    str,
    Pattern(
        r"(cpu|cuda|mps|xpu|hip|hpu|xla)(:(0|[1-9][0-9]{0,3}))?", "a torch device such as cpu, cuda or cuda:1"
    ),
]


@dataclass
class KafkaConfig:
    #: "embedded" starts a local tansu broker (demo, tests); otherwise "host:port[,host:port]".
    bootstrap_servers: Text = "embedded"
    topic: Text = "examples"
    dead_letter_topic: Text = "examples.dead-letter"
    group_id: Text = "streamlearn"
    #: partitions of `topic` this learner owns; null = all of them (one learner = one writer).
    partitions: list[Annotated[int, Range(0, INT32_MAX)]] | None = None
    #: where to start when neither a checkpoint nor a committed offset exists.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    #: what to do when a checkpointed offset no longer exists on the broker (retention, topic
    #: recreated): "fail" stops with a clear error; "earliest"/"latest" reset explicitly.
    offset_out_of_range: Literal["fail", "earliest", "latest"] = "fail"
    poll_timeout_ms: Annotated[int, Range(0, INT32_MAX)] = 200
    #: a message longer than this is dead-lettered as "oversized" without being parsed.
    max_message_bytes: Int32 = 1_048_576
    max_poll_records: Int32 = 100
    session_timeout_ms: Int32 = 6000
    heartbeat_interval_ms: Int32 = 1000
    #: passed through to kafka-python (the ssl_*/sasl_* keys must fit it: ``kafka_security``).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: create the topics if missing (embedded broker, dev clusters); production topics are managed.
    create_topics: bool = True
    #: the examples consumer's client: "librdkafka" (confluent-kafka) fetches and parses records in C
    #: threads, which costs the learner's thread ~8 µs a record instead of ~21 µs with "kafka-python"
    #: (the client of the dead-letter producer, the health probe and topic creation either way).
    client: Literal["kafka-python", "librdkafka"] = "librdkafka"


@dataclass
class ModelConfig:
    kind: Literal["mlp", "cnn"] = "mlp"
    n_inputs: PositiveInt = 784
    n_classes: PositiveInt = 10
    hidden: list[PositiveInt] = field(default_factory=lambda: [100, 100])


@dataclass
class LearnerConfig:
    #: one of ``streamlearn.learners.LEARNERS`` (checked last: knowing them means importing torch).
    name: str = "mer"
    #: micro-batch size; null = the learner's own default (1 for mer/er/sgd, 10 for lamaml/cmaml).
    batch_size: PositiveInt | None = None
    device: Device = "cpu"
    #: seeds 64-bit generators.
    seed: Annotated[int, Range(0, 2**64 - 1)] = 0
    #: measure gradient alignment every N updates (two extra gradients; every 50 costs ~1% of MER's time).
    alignment_every: NonNegativeInt = 50
    #: the learner's keyword arguments, same names; their types and limits are the learner's signature.
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckpointConfig:
    dir: str = "runs/checkpoints"
    every_examples: PositiveInt = 2000
    every_seconds: NonNegativeFloat = 60.0
    keep: PositiveInt = 3


@dataclass
class EvaluationConfig:
    window: PositiveInt = 1000
    #: ADWIN's confidence.
    drift_delta: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.002


@dataclass
class RuntimeConfig:
    threads: PositiveInt = 1
    log_every_seconds: NonNegativeFloat = 10.0
    #: stop after learning this many examples (demo and tests); null = run until stopped.
    max_examples: NonNegativeInt | None = None


@dataclass
class ServeConfig:
    #: serve predictions and /metrics from a separate process while learning.
    enabled: bool = True
    #: 127.0.0.1 by default; containers set 0.0.0.0.
    host: str = "127.0.0.1"
    port: Port = 8080
    #: the model name in the Open Inference Protocol paths (/v2/models/{name}).
    model_name: Text = "streamlearn"
    #: publish the model snapshot to the server every N updates, at most every 20 ms while learning
    #: (at once when a poll finds the topic caught up, and at least once a second).
    publish_every: PositiveInt = 10
    #: requests with a larger body are refused with 413.
    max_request_bytes: PositiveInt = 4 * 1024 * 1024
    #: rows per prediction request at most (400 beyond).
    max_rows: PositiveInt = 1024
    #: when set, /predict and /v2/models/{name}/infer require "Authorization: Bearer <token>"
    #: (at least 8 characters: ``rules.check_auth_token``).
    auth_token: str | None = None
    #: concurrent HTTP connections at most; beyond it new connections are refused.
    max_connections: Annotated[int, Range(1, 65535)] = 128
    #: a request must arrive in full within this time, or the connection is closed.
    request_timeout_seconds: PositiveFloat = 10.0


@dataclass
class GuardConfig:
    """Guardrails between learning and serving (the non-finite guard is always on)."""

    #: the largest magnitude any value the learner holds may take after an update (weights,
    #: La-MAML's learning rates, features stored for replay); an update past it, or with a nan or
    #: inf anywhere, is undone and its messages dead-lettered as non_finite_update. Raise it for
    #: unscaled features; it cannot be turned off.
    max_abs_value: Annotated[float, Range(0, 1e30, low_open=True)] = 1e6
    #: the promotion gate (streamlearn.guard): the served model is the *champion*, replaced by the
    #: learning model (the challenger) only when it is not worse. Off by default: it changes what
    #: is served (the champion lags the learner by up to ``promote_every`` examples, and is held
    #: while worse), and its one signal for corrupted labels needs a golden set only the operator
    #: can provide; the always-on non-finite guard already protects a default install.
    gate: bool = False
    #: trusted labelled examples in the message format, scored for every promotion candidate: a
    #: JSONL file, or ``topic:NAME`` to read topic NAME from its beginning. null: paired only.
    golden: str | None = None
    #: examples learned between two promotion candidates
    promote_every: Annotated[int, Range(1, 1_000_000)] = 500
    #: paired prequential: the challenger's accuracy on the examples since the last promotion may
    #: be at most this much below the champion's on the same examples
    margin: Annotated[float, Range(0, 1)] = 0.02
    #: golden set: the challenger's accuracy on it may be at most this much below the champion's
    golden_margin: Annotated[float, Range(0, 1)] = 0.02
    #: examples the gate may hold before the learner is reset to the champion and the examples
    #: learned since are quarantined; 0: never roll back by itself
    rollback_after: Annotated[int, Range(0, 1_000_000)] = 1000
    #: where rolled-back examples go, unchanged, with their source in headers
    quarantine_topic: Text = "examples.quarantine"


@dataclass
class FleetConfig:
    """Leadership among identical ``streamlearn run`` processes (``streamlearn.fleet``)."""

    #: one active learner, the others standbys that serve the newest checkpoint and take over; the
    #: lease lives beside the checkpoints (``checkpoint.dir``: an S3 object, or a lock file locally)
    enabled: bool = False
    #: an active that has not renewed its lease for this long is presumed dead and a standby takes
    #: over (renewed every fifth of it); takeover after a crash takes about this long plus a restore
    lease_seconds: Annotated[float, Range(2, 3600)] = 8.0


@dataclass
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    #: where the values came from, for messages; not a config key.
    source: str = field(default="<defaults>", compare=False, repr=False, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    def fingerprint(self) -> str:
        """Hash of what decides the learned model (model, learner); a checkpoint records it."""
        key = {"model": dataclasses.asdict(self.model), "learner": dataclasses.asdict(self.learner)}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

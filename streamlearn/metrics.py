"""Every Prometheus metric streamlearn exports, declared in one place.

Names follow Prometheus conventions: ``streamlearn_`` prefix, ``_total`` for counters, base units
(seconds, bytes, examples, messages). Two groups, because two processes export them:

- :class:`LearnerMetrics` lives in the learning daemon. It never serves HTTP itself: the daemon
  renders it (:func:`render`) about once a second into the shared-memory snapshot, and the
  prediction server process appends that text to its own ``/metrics``, so one port answers both.
- :class:`ServingMetrics` lives wherever predictions are served (the daemon's server process and
  each read-only replica): requests, latency, the version being served, readiness, build info.

Entry points that export metrics call :func:`disable_created_series` first (importing this module
changes nothing process-wide). Each class takes a ``registry`` so tests use a fresh
``CollectorRegistry()``:

>>> from prometheus_client import CollectorRegistry
>>> reg = CollectorRegistry()
>>> m = LearnerMetrics(reg)
>>> m.learned.inc(3)
>>> reg.get_sample_value("streamlearn_examples_learned_total")
3.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from streamlearn import __version__
from streamlearn.metrics_buffer import UpdateBuffer

if TYPE_CHECKING:  # the server process and replicas import this module: no Kafka client there
    from kafka import TopicPartition

    from streamlearn.learners.base import UpdateStats
    from streamlearn.replay import ReservoirBuffer

# An MER update of one example is ~4 ms, a La-MAML batch of 10 ~25 ms; a checkpoint tens of ms.
UPDATE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
PREDICT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
CHECKPOINT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COSINE_BUCKETS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))
# Dot products scale with the gradients; symmetric decades cover both signs.
DOT_BUCKETS = (-10.0, -1.0, -0.1, -0.01, -0.001, 0.0, 0.001, 0.01, 0.1, 1.0, 10.0)


class LearnerMetrics:
    """What the daemon's learning loop reports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        #: per-update values queued by observe_update; registered first: any read of ``r`` flushes it
        self._updates = UpdateBuffer(r)
        self.consumed = Counter(
            "streamlearn_examples_consumed", "Messages read from the examples topic.", registry=r
        )
        self.learned = Counter(
            "streamlearn_examples_learned", "Examples learned (each predicted first).", registry=r
        )
        self.rejected = Counter(
            "streamlearn_examples_rejected",
            "Messages sent to the dead-letter topic, by reason code.",
            ["reason"],
            registry=r,
        )
        self.updates_undone = Counter(
            "streamlearn_updates_undone",
            "Updates the non-finite guard undid (non-finite or out-of-bound values); their messages "
            "are dead-lettered with reason non_finite_update.",
            registry=r,
        )
        self.accuracy = Gauge(
            "streamlearn_prequential_accuracy",
            "Prequential (test-then-train) accuracy since the model started.",
            registry=r,
        )
        self.accuracy_rolling = Gauge(
            "streamlearn_prequential_accuracy_rolling",
            "Prequential accuracy over the last evaluation.window examples.",
            registry=r,
        )
        self.task_accuracy = Gauge(
            "streamlearn_prequential_task_accuracy",
            "Prequential accuracy per task id (messages that carry `task`).",
            ["task"],
            registry=r,
        )
        self.loss = Gauge(
            "streamlearn_prequential_loss",
            "Mean log-loss of the predictions made before learning, last evaluation.window examples.",
            registry=r,
        )
        self.kappa = Gauge(
            "streamlearn_prequential_kappa", "Cohen's kappa of the prequential predictions.", registry=r
        )
        self.drifts = Counter(
            "streamlearn_drift_detections",
            "Drifts flagged by ADWIN on the prequential error stream.",
            registry=r,
        )
        self.update_loss = Gauge(
            "streamlearn_update_loss", "Training loss the learner reported for its last update.", registry=r
        )
        self.alignment_cos = Gauge(
            "streamlearn_gradient_alignment_cosine",
            "Cosine between the incoming-batch gradient and a replay-sample gradient (last probe).",
            registry=r,
        )
        self.alignment_dot = Gauge(
            "streamlearn_gradient_alignment_dot",
            "Dot product between the incoming-batch and replay-sample gradients (last probe).",
            registry=r,
        )
        self.alignment_cos_hist = Histogram(
            "streamlearn_gradient_alignment_cosine_distribution",
            "Distribution of the gradient-alignment cosine over probes.",
            buckets=COSINE_BUCKETS,
            registry=r,
        )
        self.alignment_dot_hist = Histogram(
            "streamlearn_gradient_alignment_dot_distribution",
            "Distribution of the gradient-alignment dot product over probes.",
            buckets=DOT_BUCKETS,
            registry=r,
        )
        self.learning_rate = Gauge(
            "streamlearn_learning_rate",
            "La-MAML/C-MAML effective per-parameter learning rates relu(alpha): mean, min, max.",
            ["stat"],
            registry=r,
        )
        self.update_seconds = Histogram(
            "streamlearn_update_duration_seconds",
            "Wall time of one learner update (predict + learn one micro-batch).",
            buckets=UPDATE_BUCKETS,
            registry=r,
        )
        self.buffer_examples = Gauge(
            "streamlearn_replay_buffer_examples", "Examples held in the replay buffer.", registry=r
        )
        self.buffer_capacity = Gauge(
            "streamlearn_replay_buffer_capacity_examples", "Capacity of the replay buffer.", registry=r
        )
        self.buffer_bytes = Gauge(
            "streamlearn_replay_buffer_bytes",
            "Memory of the replay buffer's preallocated tensors.",
            registry=r,
        )
        self.buffer_class = Gauge(
            "streamlearn_replay_buffer_class_examples",
            "Examples in the replay buffer per class (label name).",
            ["class_label"],
            registry=r,
        )
        self.lag = Gauge(
            "streamlearn_consumer_lag_messages",
            "High watermark minus the next offset to learn, per partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.offset = Gauge(
            "streamlearn_consumer_offset",
            "Next offset to learn per partition (what the next checkpoint would commit).",
            ["topic", "partition"],
            registry=r,
        )
        self.broker_up = Gauge(
            "streamlearn_broker_up",
            "1 while the Kafka cluster answers the daemon's metadata probe (about once a second), else 0.",
            registry=r,
        )
        self.broker_outages = Counter(
            "streamlearn_broker_outages",
            "Times the Kafka cluster stopped answering (learning pauses; serving goes on).",
            registry=r,
        )
        self.serve_restarts = Counter(
            "streamlearn_serving_process_restarts",
            "Times the learner restarted its prediction-server process after it died.",
            registry=r,
        )
        self.offset_resets = Counter(
            "streamlearn_offset_resets",
            "Positions reset because they left the log (kafka.offset_out_of_range earliest/latest).",
            ["topic", "partition", "policy"],
            registry=r,
        )
        self.checkpoint_time = Gauge(
            "streamlearn_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last durable checkpoint (0: none yet in this process).",
            registry=r,
        )
        self.checkpoint_age = Gauge(
            "streamlearn_checkpoint_age_seconds",
            "Seconds since the last durable checkpoint (since start when there is none).",
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            "streamlearn_checkpoint_duration_seconds",
            "Time to write, fsync and commit one checkpoint.",
            buckets=CHECKPOINT_BUCKETS,
            registry=r,
        )
        self.checkpoints = Counter(
            "streamlearn_checkpoints_written", "Checkpoints written and made durable.", registry=r
        )
        self.checkpoint_failures = Counter(
            "streamlearn_checkpoint_failures",
            "Checkpoints that could not be written (offsets not committed past the last good one).",
            registry=r,
        )
        self.model_learned = Gauge(
            "streamlearn_model_examples_learned",
            "Examples the learning model has learned in its whole life (restored from the checkpoint; "
            "examples_learned_total counts this process only).",
            registry=r,
        )
        self.model_version = Gauge(
            "streamlearn_model_version", "Updates applied to the learning model (its version).", registry=r
        )
        self.published_version = Gauge(
            "streamlearn_snapshot_published_version",
            "Model version last published to the prediction server.",
            registry=r,
        )
        self._updates.bind(self.update_seconds, self.learned, self.update_loss, self.learning_rate)

    def observe_update(self, stats: UpdateStats, seconds: float) -> None:
        """What one learned micro-batch reports: time, count, loss, alignment, learning rates.

        Time, count, loss and rates are queued and recorded in bulk before any read of the registry
        (``metrics_buffer.py``); the alignment, measured every ``alignment_every`` updates, at once.
        """
        self._updates.add(seconds, stats.n, stats.loss, stats.lr_stats)
        if stats.alignment_cos is not None:
            self.alignment_cos.set(stats.alignment_cos)
            self.alignment_cos_hist.observe(stats.alignment_cos)
        if stats.alignment_dot is not None:
            self.alignment_dot.set(stats.alignment_dot)
            self.alignment_dot_hist.observe(stats.alignment_dot)

    def observe_buffer(self, buf: ReservoirBuffer, label_names: list[str]) -> None:
        """Fill, capacity, memory and per-class content of a replay buffer."""
        self.buffer_examples.set(len(buf))
        self.buffer_capacity.set(buf.capacity)
        self.buffer_bytes.set(sum(t.element_size() * t.nelement() for t in (buf.x, buf.y, buf.task)))
        counts = buf.y[: len(buf)].cpu().bincount(minlength=len(label_names)).tolist()
        for name, c in zip(label_names, counts, strict=False):
            self.buffer_class.labels(class_label=name).set(c)

    def observe_positions(
        self, offsets: Mapping[TopicPartition, int], lag: Mapping[TopicPartition, int]
    ) -> None:
        """Next offset to learn and consumer lag, per partition."""
        for tp, n in lag.items():
            self.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(n)
        for tp, off in offsets.items():
            self.offset.labels(topic=tp.topic, partition=str(tp.partition)).set(off)

    def observe_prequential(self, snap: dict[str, Any]) -> None:
        """Copy a ``PrequentialMetrics.snapshot()`` into the gauges."""
        self.accuracy.set(snap["accuracy"])
        self.accuracy_rolling.set(snap["rolling_accuracy"])
        self.kappa.set(snap["kappa"])
        if snap["loss"] == snap["loss"]:  # NaN until a loss is known: leave the gauge absent-ish at 0
            self.loss.set(snap["loss"])
        for task, acc in snap["task_accuracy"].items():
            self.task_accuracy.labels(task=str(task)).set(acc)


class ServingMetrics:
    """What a prediction server reports (the daemon's server process and each read-only replica)."""

    def __init__(self, registry: CollectorRegistry, *, role: str, learner: str, model: str) -> None:
        r = registry
        self.build_info = Gauge(
            "streamlearn_build_info",
            "Always 1; labels say the version, the role (learner or replica), the learner and model name.",
            ["version", "role", "learner", "model"],
            registry=r,
        )
        self.build_info.labels(version=__version__, role=role, learner=learner, model=model).set(1)
        self.ready = Gauge(
            "streamlearn_ready",
            "1 when predictions can be served (model restored; for the learner also consumer assigned).",
            registry=r,
        )
        self.requests = Counter(
            "streamlearn_prediction_requests",
            "HTTP requests to the prediction server by endpoint and status code.",
            ["endpoint", "code"],
            registry=r,
        )
        self.seconds = Histogram(
            "streamlearn_prediction_duration_seconds",
            "Time to answer a request (parse, predict, respond), by endpoint.",
            ["endpoint"],
            buckets=PREDICT_BUCKETS,
            registry=r,
        )
        self.rows = Counter("streamlearn_prediction_rows", "Rows (examples) predicted over HTTP.", registry=r)
        self.serving_version = Gauge(
            "streamlearn_serving_model_version",
            "Version (update count) of the model snapshot this server answers with.",
            registry=r,
        )
        self.reloads = Counter(
            "streamlearn_serving_reloads",
            "Model snapshots this server has loaded (checkpoint reloads on a replica).",
            registry=r,
        )


def disable_created_series() -> None:
    """Export no ``<counter>_created`` / ``<histogram>_created`` series, in this whole process.

    They double the exposition and no dashboard or alert reads them; worse, with them in the
    learner's text a real Prometheus returned nothing for the dashboard's ``histogram_quantile``
    queries (tests/integration/test_prometheus.py). prometheus_client keeps this as a process-wide
    switch, so the entry points flip it at start — ``streamlearn.cli.main``, the server process's
    ``main`` and ``Daemon.run`` (for code that runs the daemon without the CLI) — rather than a
    library import doing so behind an embedder's back.
    """
    disable_created_metrics()


def counter_value(counter: Counter) -> float:
    """What an unlabelled counter has counted in this process, read back from its samples."""
    return next((s.value for fam in counter.collect() for s in fam.samples if s.name.endswith("_total")), 0.0)


def counter_values(counter: Counter, label: str) -> dict[str, float]:
    """What a counter with one label has counted in this process, by label value.

    >>> c = Counter("demo_rejected", "Rejections.", ["reason"], registry=CollectorRegistry())
    >>> c.labels(reason="bad_x").inc(2)
    >>> counter_values(c, "reason")
    {'bad_x': 2.0}
    """
    return {
        s.labels[label]: s.value
        for fam in counter.collect()
        for s in fam.samples
        if s.name.endswith("_total")
    }


class ConnectionMetrics:
    """The prediction server's connections (``serving/http.py``): client disconnects, connections
    it closed to stay within ``serve.max_connections`` and ``serve.request_timeout_seconds``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.client_disconnects = Counter(
            "streamlearn_http_client_disconnects",
            "Connections the client reset or closed before the server had answered (normal; not logged).",
            registry=registry,
        )
        self.closed = Counter(
            "streamlearn_http_connections_closed",
            "Connections the server closed: evicted (the longest-waiting idle or incomplete one, to make "
            "room at serve.max_connections), refused (503: every connection busy for as long as "
            "serve.request_timeout_seconds), request_timeout (a request not in full within it: 408), "
            "idle_timeout (no request for as long).",
            ["reason"],
            registry=registry,
        )
        self.open = Gauge(
            "streamlearn_http_open_connections",
            "Connections open now (at most serve.max_connections).",
            registry=registry,
        )


class GuardMetrics:
    """The promotion gate, rollbacks and operator controls (``streamlearn.guard``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.held = Gauge(
            "streamlearn_serving_held",
            "1 while the promotion gate holds the served model back, by reason "
            "(labels, paired, golden, stalled).",
            ["reason"],
            registry=r,
        )
        self.accuracy = Gauge(
            "streamlearn_gate_accuracy",
            "Accuracy the gate compares: paired (examples since the last promotion) and golden, "
            "for the champion (served) and the challenger (learning).",
            ["model", "signal"],
            registry=r,
        )
        self.promotions = Counter("streamlearn_promotions", "Challengers promoted to serving.", registry=r)
        self.rollbacks = Counter(
            "streamlearn_rollbacks", "Learner resets to the champion (gate or operator).", registry=r
        )
        self.quarantined = Counter(
            "streamlearn_examples_quarantined",
            "Examples sent to the quarantine topic by rollbacks.",
            registry=r,
        )
        self.paused = Gauge("streamlearn_learning_paused", "1 while an operator paused learning.", registry=r)


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text exposition (format 0.0.4) of a registry."""
    return generate_latest(registry)

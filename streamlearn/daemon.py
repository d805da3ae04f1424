"""The daemon: Kafka in, test-then-train, checkpoints with offsets — no example lost or learned twice.

Per message: decode and validate (a bad one goes to the dead-letter topic with its reason);
collect valid examples into micro-batches of the learner's size (a task change closes a batch
early); predict each batch with the current model *before* learning it (prequential), then learn.

Delivery guarantee. Every N examples / T seconds and on SIGTERM the daemon writes one checkpoint
holding the learner, label and task maps, metric state, counters and the next offset of every
partition — the offset after the last message that is fully handled. Only after that file is
durable are the offsets committed to Kafka; on start the daemon restores the newest good
checkpoint and seeks to its offsets. A ``kill -9`` at any moment therefore re-reads exactly the
messages the restored model has not learned, and (same seed, CPU, one partition) the model after
crash + restart equals that of an uninterrupted run.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from kafka import TopicPartition
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from streamlearn import __version__
from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import Config
from streamlearn.errors import CheckpointError, ConfigError
from streamlearn.evaluation.prequential import PrequentialMetrics
from streamlearn.ingest.broker import EmbeddedBroker, create_topic
from streamlearn.ingest.deadletter import DeadLetterSink
from streamlearn.ingest.decode import Decoder, Example, Rejection
from streamlearn.ingest.health import BrokerHealth
from streamlearn.ingest.kafka_options import client_options
from streamlearn.ingest.labels import LabelMap, TaskMap
from streamlearn.ingest.source import KafkaSource, OffsetOutOfRange, offset_key, unreachable
from streamlearn.learners import Learner, UpdateStats, build_model, make_learner
from streamlearn.metrics import LearnerMetrics, render
from streamlearn.runtime import pin_threads
from streamlearn.serving.publisher import Publisher, ServingError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
#: how often the loop refreshes gauges and hands the metrics text to the server (seconds)
METRICS_EVERY_S = 1.0
#: how often offsets a checkpoint could not commit are retried between checkpoints (seconds)
COMMIT_RETRY_S = 2.0


@dataclass
class Pending:
    examples: list[Example] = field(default_factory=list)
    first_offset: dict[TopicPartition, int] = field(default_factory=dict)

    def add(self, ex: Example, tp: TopicPartition, offset: int) -> None:
        self.examples.append(ex)
        self.first_offset.setdefault(tp, offset)

    def clear(self) -> None:
        self.examples.clear()
        self.first_offset.clear()


def build_learner(cfg: Config) -> Learner:
    model = build_model(
        cfg.model.kind,
        cfg.model.n_inputs,
        cfg.model.n_classes,
        tuple(cfg.model.hidden),
        seed=cfg.learner.seed,
    )
    try:
        return make_learner(
            cfg.learner.name,
            model,
            n_classes=cfg.model.n_classes,
            device=cfg.learner.device,
            seed=cfg.learner.seed,
            alignment_every=cfg.learner.alignment_every,
            **cfg.learner.hparams,
        )
    except ConfigError as exc:
        raise ConfigError(str(exc), source=cfg.source) from None


def process_rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state: Any = np.random.get_state()
    kind, keys, pos, has_gauss, cached = np_state
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }


def restore_process_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


class Daemon:
    """Wires source → decoder → learner ↔ buffer → metrics → checkpoints. ``run`` blocks."""

    def __init__(self, cfg: Config, *, on_progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.on_progress = on_progress
        self._stop = threading.Event()
        self.learner = build_learner(cfg)
        self.batch_size = cfg.learner.batch_size or self.learner.default_batch_size
        self.labels = LabelMap(cfg.model.n_classes)
        self.tasks = TaskMap()
        self.decoder = Decoder(
            cfg.model.n_inputs, self.labels, self.tasks, max_bytes=cfg.kafka.max_message_bytes
        )
        self.metrics = PrequentialMetrics(
            cfg.model.n_classes, window=cfg.evaluation.window, drift_delta=cfg.evaluation.drift_delta
        )
        self.store = CheckpointStore(cfg.checkpoint.dir, keep=cfg.checkpoint.keep)
        self.rejected: Counter[str] = Counter()
        self.consumed = 0
        self.checkpoints_written = 0
        self.checkpoint_failures = 0
        self.next_offset: dict[TopicPartition, int] = {}
        self.pending = Pending()
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = cfg.kafka.bootstrap_servers
        self.ready = threading.Event()
        self._restored_offsets: dict[str, int] = {}
        self._first_learn: tuple[float, int] | None = None  # (time, learned) at the first batch of this run
        self.registry = CollectorRegistry()
        self.m = LearnerMetrics(self.registry)
        self.publisher: Publisher | None = None
        self.serve_port: int | None = None
        self._started = time.time()
        self._last_checkpoint_time: float | None = None
        self._source: KafkaSource | None = None
        self.health: BrokerHealth | None = None
        self._outages_seen = 0
        #: offsets of a checkpoint written while the broker was down, committed once it is back
        self._commit_owed: dict[TopicPartition, int] | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Graceful stop: finish the current update, checkpoint, commit, return."""
        self._stop.set()

    @property
    def learned(self) -> int:
        return self.learner.examples

    def run(self) -> dict[str, Any]:
        pin_threads(self.cfg.runtime.threads)
        self._restore()
        try:
            if self.cfg.serve.enabled:
                self._start_serving()
            return self._run()
        finally:
            if self.publisher is not None:
                self.publisher.stop()
                self.publisher = None

    def _start_serving(self) -> None:
        self.publisher = Publisher(self.cfg, self.learner.model, self.learner.name)
        self.serve_port = self.publisher.start()
        self.publisher.publish_model(self.learner.updates)
        self._publish_metrics()
        s = self.cfg.serve
        log.info(
            "serving on http://%s:%d (POST /predict, /v2/models/%s/infer, GET /metrics)",
            s.host,
            self.serve_port,
            s.model_name,
        )

    def _run(self) -> dict[str, Any]:
        if self.cfg.kafka.bootstrap_servers == "embedded":
            self.broker = EmbeddedBroker().start()
            self.bootstrap = self.broker.bootstrap_servers
            log.info("embedded broker (tansu) listening on %s", self.bootstrap)
        source = sink = None
        try:
            if self.cfg.kafka.create_topics:
                opts = client_options(self.cfg.kafka, self.bootstrap)
                for topic in (self.cfg.kafka.topic, self.cfg.kafka.dead_letter_topic):
                    try:
                        create_topic(self.bootstrap, topic, client_options=opts)
                    except KafkaError as exc:
                        raise unreachable(self.cfg.kafka, self.bootstrap, exc) from exc
            # The slowest update bounds how long we may go between polls.
            source = KafkaSource(self.cfg.kafka, self.bootstrap)
            sink = DeadLetterSink(self.cfg.kafka, self.bootstrap)
            parts = source.assign()
            origin = source.seek(self._restored_offsets)
            for tp in parts:
                self.next_offset[tp] = source.consumer.position(tp)
                log.info("consuming %s from %s", offset_key(tp), origin[offset_key(tp)])
            try:
                source.check_beginning(
                    {
                        tp: off
                        for tp, off in self.next_offset.items()
                        if offset_key(tp) in self._restored_offsets
                    }
                )
            except OffsetOutOfRange as exc:
                self._out_of_range(source, exc)
            self._source = source
            self.health = BrokerHealth(self.cfg.kafka, self.bootstrap).start()
            self.ready.set()
            if self.publisher is not None:
                self.publisher.set_ready(True)
            self._loop(source, sink)
            self._checkpoint(source, sink, reason="stop")
        finally:
            if self.health is not None:
                self.health.stop()
            self.ready.clear()
            if self.publisher is not None:
                self.publisher.set_ready(False)
            self._source = None
            if sink is not None:
                sink.close()
            if source is not None:
                source.close()
            if self.broker is not None:
                self.broker.stop()
        return self.summary()

    # -- the loop -----------------------------------------------------------------------------
    def _loop(self, source: KafkaSource, sink: DeadLetterSink) -> None:
        cfg = self.cfg
        last_ckpt_examples, last_ckpt_time = self.learned, time.monotonic()
        last_log = last_metrics = last_commit_try = time.monotonic()
        rate_mark = (time.monotonic(), self.learned)
        max_examples = cfg.runtime.max_examples
        if max_examples is not None and self.learned >= max_examples:
            log.info(
                "already learned %d >= runtime.max_examples=%d: nothing to do", self.learned, max_examples
            )
            return
        while not self._stop.is_set():
            try:
                for tp, rec in source.poll(cfg.kafka.poll_timeout_ms):
                    self._handle(tp, rec, sink)
                    if len(self.pending.examples) >= self.batch_size:
                        self._learn_pending()
                        if max_examples is not None and self.learned >= max_examples:
                            self._stop.set()
                        if self._stop.is_set():
                            break
                else:  # every fetched record handled: our positions are the consumer's
                    source.check_range(self.next_offset)
            except OffsetOutOfRange as exc:
                self._out_of_range(source, exc)
            now = time.monotonic()
            requested = self.publisher.checkpoint_requested() if self.publisher is not None else 0
            if requested and self.publisher is not None:  # POST /v2/admin/checkpoint
                ok = self._checkpoint(source, sink, reason="requested")
                self.publisher.answer_checkpoint(requested, ok)
                last_ckpt_examples, last_ckpt_time = self.learned, now
            elif (
                self.learned - last_ckpt_examples >= cfg.checkpoint.every_examples
                or now - last_ckpt_time >= cfg.checkpoint.every_seconds
            ) and not self._stop.is_set():
                self._checkpoint(source, sink, reason="periodic")
                last_ckpt_examples, last_ckpt_time = self.learned, now
            if self._commit_owed is not None and self.broker_up and now - last_commit_try >= COMMIT_RETRY_S:
                last_commit_try = now
                if source.commit(self._commit_owed):
                    log.info("committed the offsets of the last checkpoint (the broker is back)")
                    self._commit_owed = None
            if now - last_metrics >= METRICS_EVERY_S:
                last_metrics = now
                self._publish_metrics()
            if now - last_log >= cfg.runtime.log_every_seconds:
                rate = (self.learned - rate_mark[1]) / max(now - rate_mark[0], 1e-9)
                rate_mark, last_log = (now, self.learned), now
                self._report(source, rate)

    def _out_of_range(self, source: KafkaSource, exc: OffsetOutOfRange) -> None:
        """Apply kafka.offset_out_of_range: 'fail' stops with the error (nothing checkpointed or
        committed past what was learned); 'earliest'/'latest' reset explicitly, loudly and counted."""
        policy = self.cfg.kafka.offset_out_of_range
        if policy == "fail":
            log.error("%s", exc)
            raise exc
        if self.pending.examples:  # learned before the reset: they were read from the old log
            self._learn_pending()
        for tp, wanted in exc.offsets.items():
            new = source.reset(tp, policy)
            self.next_offset[tp] = new
            self.m.offset_resets.labels(topic=tp.topic, partition=str(tp.partition), policy=policy).inc()
            log.warning(
                "%s: offset %d is out of range; kafka.offset_out_of_range=%s: reading continues at %d",
                offset_key(tp),
                wanted,
                policy,
                new,
            )

    def _handle(self, tp: TopicPartition, rec: Any, sink: DeadLetterSink) -> None:
        self.consumed += 1
        self.m.consumed.inc()
        result = self.decoder.decode(rec.value)
        if isinstance(result, Rejection):
            sink.send(
                rec.value,
                reason=result.reason,
                detail=result.detail,
                topic=tp.topic,
                partition=tp.partition,
                offset=rec.offset,
            )
            self.rejected[result.reason] += 1
            self.m.rejected.labels(reason=result.reason).inc()
            log.debug("rejected %s@%d: %s (%s)", offset_key(tp), rec.offset, result.reason, result.detail)
        else:
            # A task change closes the batch: a micro-batch belongs to one task.
            if self.pending.examples and result.task != self.pending.examples[0].task:
                self._learn_pending()
            self.pending.add(result, tp, rec.offset)
        self.next_offset[tp] = rec.offset + 1

    def _learn_pending(self) -> None:
        t0 = time.perf_counter()
        batch = self.pending.examples
        x = torch.from_numpy(np.stack([e.x for e in batch]))
        y = torch.tensor([e.y for e in batch], dtype=torch.long)
        probs = self.learner.predict_proba(x)  # test first ...
        pred = probs.argmax(dim=1).tolist()
        p_true = probs[torch.arange(len(batch)), y].clamp_min(1e-12)
        losses = (-torch.log(p_true)).tolist()
        task = batch[0].task
        for e, p, loss in zip(batch, pred, losses, strict=True):
            if self.metrics.update(e.y, p, loss=loss, task=task):
                self.m.drifts.inc()
                log.warning(
                    "drift detected by ADWIN after %d examples (rolling accuracy %.3f)",
                    self.metrics.n,
                    self.metrics.rolling_accuracy,
                )
        if self._first_learn is None:
            self._first_learn = (time.monotonic(), self.learned)
        stats = self.learner.learn(x, y, task=task)  # ... then train
        self.pending.clear()
        self._observe_update(stats, time.perf_counter() - t0)

    def _observe_update(self, stats: UpdateStats, seconds: float) -> None:
        m = self.m
        m.update_seconds.observe(seconds)
        m.learned.inc(stats.n)
        m.update_loss.set(stats.loss)
        if stats.alignment_cos is not None:
            m.alignment_cos.set(stats.alignment_cos)
            m.alignment_cos_hist.observe(stats.alignment_cos)
        if stats.alignment_dot is not None:
            m.alignment_dot.set(stats.alignment_dot)
            m.alignment_dot_hist.observe(stats.alignment_dot)
        for stat, value in stats.lr_stats.items():
            m.learning_rate.labels(stat=stat).set(value)
        if self.publisher is not None and self.learner.updates % self.cfg.serve.publish_every == 0:
            self.publisher.publish_model(self.learner.updates)

    @property
    def broker_up(self) -> bool:
        return self.health is None or self.health.up

    def _publish_metrics(self) -> None:
        """Refresh the gauges that are read rather than counted, and hand the text to the server."""
        m = self.m
        up = self.broker_up
        m.broker_up.set(int(up))
        if self.health is not None and self.health.outages > self._outages_seen:
            m.broker_outages.inc(self.health.outages - self._outages_seen)
            self._outages_seen = self.health.outages
        m.observe_prequential(self.metrics.snapshot())
        m.model_version.set(self.learner.updates)
        buf = self.learner.buffer
        if buf is not None:
            m.buffer_examples.set(len(buf))
            m.buffer_capacity.set(buf.capacity)
            m.buffer_bytes.set(sum(t.element_size() * t.nelement() for t in (buf.x, buf.y, buf.task)))
            counts = torch.bincount(buf.y[: len(buf)].cpu(), minlength=self.cfg.model.n_classes).tolist()
            for name, c in zip(self._label_names(), counts, strict=False):
                m.buffer_class.labels(class_label=name).set(c)
        if self._source is not None:
            safe = self.safe_offsets()
            for tp, lag in self._source.lag(safe).items():
                m.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
            for tp, off in safe.items():
                m.offset.labels(topic=tp.topic, partition=str(tp.partition)).set(off)
        last = self._last_checkpoint_time
        m.checkpoint_age.set(time.time() - (last if last is not None else self._started))
        if self.publisher is not None:
            try:
                if self.publisher.restart_if_dead():
                    m.serve_restarts.inc()
            except ServingError as exc:
                log.error("%s; trying again in %.0f s", exc, METRICS_EVERY_S)
                return
            # Not ready while the broker is away: the model is served but no longer learning.
            self.publisher.set_ready(self.ready.is_set() and up)
            if self.publisher.published_version != self.learner.updates:
                self.publisher.publish_model(self.learner.updates)
            m.published_version.set(self.publisher.published_version)
            self.publisher.publish_text(
                {"labels": self._label_names(), "learner": self.learner.name}, render(self.registry)
            )

    def _label_names(self) -> list[str]:
        return self.labels.names() or [str(i) for i in range(self.cfg.model.n_classes)]

    # -- checkpoints --------------------------------------------------------------------------
    def safe_offsets(self) -> dict[TopicPartition, int]:
        """Next offset per partition such that everything before it is learned or dead-lettered."""
        out = {}
        for tp, nxt in self.next_offset.items():
            out[tp] = min(nxt, self.pending.first_offset.get(tp, nxt))
        return out

    def state(self, offsets: dict[TopicPartition, int]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "created": time.time(),
            "config_fingerprint": self.cfg.fingerprint(),
            "learner": self.learner.state_dict(),
            "labels": self.labels.state_dict(),
            "tasks": self.tasks.state_dict(),
            "metrics": {"state": self.metrics.state_dict(), "summary": self.metrics.snapshot()},
            "offsets": {offset_key(tp): int(off) for tp, off in offsets.items()},
            "counters": {"consumed": self.consumed, "learned": self.learned, "rejected": dict(self.rejected)},
            "rng": process_rng_state(),
        }

    def _checkpoint(self, source: KafkaSource, sink: DeadLetterSink, *, reason: str) -> bool:
        t0 = time.monotonic()
        up = self.broker_up
        if not up and sink.pending:
            # Dead letters must be acknowledged before the offsets move past them; wait for the broker.
            log.warning(
                "checkpoint (%s) postponed: broker down with %d dead letters unacknowledged",
                reason,
                sink.pending,
            )
            return False
        try:
            sink.flush()  # dead letters must be durable before their offsets are committed
        except Exception as exc:
            self.checkpoint_failures += 1
            self.m.checkpoint_failures.inc()
            log.error("checkpoint skipped: dead-letter topic did not acknowledge: %s", exc)
            return False
        offsets = self.safe_offsets()
        try:
            path = self.store.save(self.state(offsets), self.learned)
        except CheckpointError as exc:
            self.checkpoint_failures += 1
            self.m.checkpoint_failures.inc()
            log.error("checkpoint failed (learning continues, offsets not committed): %s", exc)
            return False
        self.checkpoints_written += 1
        self._last_checkpoint_time = time.time()
        committed = up and source.commit(offsets)
        self._commit_owed = None if committed else offsets
        self.m.checkpoints.inc()
        self.m.checkpoint_time.set(self._last_checkpoint_time)
        self.m.checkpoint_seconds.observe(time.monotonic() - t0)
        log.info(
            "checkpoint (%s) %s: %d learned, offsets %s%s, %.0f ms",
            reason,
            path.name,
            self.learned,
            {offset_key(tp): o for tp, o in offsets.items()},
            "" if committed else " (commit deferred: broker down)" if not up else " (commit failed)",
            1000 * (time.monotonic() - t0),
        )
        return True

    def _restore(self) -> None:
        self.store.remove_stale_temporaries()
        found = self.store.latest()
        if found is None:
            log.info("no checkpoint in %s: starting a new model", self.store.dir)
            return
        info, state = found
        if state.get("config_fingerprint") != self.cfg.fingerprint():
            log.warning(
                "checkpoint %s was written with a different model/learner config; loading it anyway "
                "(it fails if the shapes differ)",
                info.path.name,
            )
        self.learner.load_state_dict(state["learner"])
        self.labels.load_state_dict(state["labels"])
        self.tasks.load_state_dict(state["tasks"])
        self.metrics.load_state_dict(state["metrics"]["state"])
        counters = state["counters"]
        self.consumed = int(counters["consumed"])
        self.rejected = Counter({k: int(v) for k, v in counters["rejected"].items()})
        restore_process_rng_state(state["rng"])
        self._restored_offsets = {k: int(v) for k, v in state["offsets"].items()}
        log.info(
            "restored %s: %d examples learned, offsets %s",
            info.path.name,
            self.learned,
            self._restored_offsets,
        )

    # -- reporting ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        snap = self.metrics.snapshot()
        rate = 0.0
        if self._first_learn is not None:
            t0, n0 = self._first_learn
            rate = (self.learned - n0) / max(time.monotonic() - t0, 1e-9)
        return {
            "examples_per_s": rate,
            "learner": self.learner.name,
            "learned": self.learned,
            "consumed": self.consumed,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected),
            "prequential_accuracy": snap["accuracy"],
            "rolling_accuracy": snap["rolling_accuracy"],
            "kappa": snap["kappa"],
            "drifts": snap["drifts"],
            "checkpoints": self.checkpoints_written,
            "checkpoint_failures": self.checkpoint_failures,
            "offsets": {offset_key(tp): o for tp, o in self.safe_offsets().items()},
        }

    def _report(self, source: KafkaSource, rate: float) -> None:
        lag = sum(source.lag(self.safe_offsets()).values())
        s = self.summary()
        s.update(examples_per_s=rate, lag=lag)
        log.info(
            "learned %d (%.1f ex/s), rejected %d, prequential accuracy %.4f, rolling %.4f, lag %d",
            s["learned"],
            rate,
            s["rejected"],
            s["prequential_accuracy"],
            s["rolling_accuracy"],
            lag,
        )
        if self.on_progress is not None:
            self.on_progress(s)

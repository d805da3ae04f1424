"""The daemon: Kafka in, test-then-train, checkpoints with offsets — no example lost or learned twice.

Per message (:mod:`streamlearn.consume`): decode and validate (a bad one goes to the dead-letter
topic with its reason); collect valid examples into micro-batches of the learner's size (a task
change closes a batch early); predict each batch with the current model *before* learning it
(prequential), then learn.

Delivery guarantee. Every N examples / T seconds and on SIGTERM the daemon writes one checkpoint
holding the learner, label and task maps, metric state, counters and the next offset of every
partition — the offset after the last message that is fully handled. Only after that file is
durable are the offsets committed to Kafka; on start the daemon restores the newest good
checkpoint and seeks to its offsets. A ``kill -9`` at any moment therefore re-reads exactly the
messages the restored model has not learned, and (same seed, CPU, one partition) the model after
crash + restart equals that of an uninterrupted run. The checkpoint dict is built in
:mod:`streamlearn.model_state`, the commit order kept in :mod:`streamlearn.delivery`.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import Config
from streamlearn.consume import TestThenTrain
from streamlearn.delivery import Checkpointer, Pending, reset_out_of_range, resume
from streamlearn.fleet import run_member
from streamlearn.guard.hooks import GuardHooks
from streamlearn.ingest.broker import EmbeddedBroker
from streamlearn.ingest.deadletter import DeadLetterSink
from streamlearn.ingest.decode import Decoder
from streamlearn.ingest.health import BrokerHealth
from streamlearn.ingest.source import OffsetOutOfRange, Source, ensure_topics, offset_key
from streamlearn.ingest.source_librdkafka import make_source
from streamlearn.learners import Learner
from streamlearn.metrics import LearnerMetrics, disable_created_series, render
from streamlearn.model_state import ModelState
from streamlearn.progress import model_summary, report_progress
from streamlearn.runtime import Every, pin_threads
from streamlearn.serving.live_meta import page_meta
from streamlearn.serving.publisher import Publisher, ServingError

log = logging.getLogger(__name__)

#: how often the loop refreshes gauges, supervises the server and hands it model and metrics (seconds)
METRICS_EVERY_S = 1.0
#: how often offsets a checkpoint could not commit are retried between checkpoints (seconds)
COMMIT_RETRY_S = 2.0


class Daemon:
    """Wires source → decoder → learner ↔ buffer → metrics → checkpoints. ``run`` blocks."""

    def __init__(self, cfg: Config, *, on_progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.on_progress = on_progress
        self._stop = threading.Event()
        self.stop_requested = False
        self.registry = CollectorRegistry()
        #: the Prometheus metrics; the one place where events are counted
        self.prom = LearnerMetrics(self.registry)
        self.model = ModelState(cfg, self.prom)
        # Read when the metrics are rendered, so it is exact whenever scraped, at no cost per update.
        self.prom.model_learned.set_function(lambda: self.learned)
        self.batch_size = cfg.learner.batch_size or self.learner.default_batch_size
        self.decoder = self._decoder()
        self.checkpointer = Checkpointer(
            CheckpointStore(cfg.checkpoint.dir, keep=cfg.checkpoint.keep), self.model, self.prom
        )
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = cfg.kafka.bootstrap_servers
        self.ready = threading.Event()
        self._restored_offsets: dict[str, int] = {}
        self._rate_mark = (time.monotonic(), 0)  # (time, learned) at the last progress report
        self.publisher: Publisher | None = None
        self.serve_port: int | None = None
        self._started = time.time()
        self._source: Source | None = None
        self.health: BrokerHealth | None = None
        self._outages_seen = 0
        self._sink: DeadLetterSink | None = None
        #: the promotion gate, rollback/quarantine and operator controls (streamlearn.guard)
        self.guard = GuardHooks(cfg, self.model.guard, self.registry, self.checkpointer.store)
        #: the data path: decode, dead-letter, micro-batch, test, then train
        self.step = self._step()

    # -- lifecycle ----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Graceful stop: finish the current update, checkpoint, commit, return."""
        self.stop_requested = True
        self._stop.set()

    @property
    def learner(self) -> Learner:
        return self.model.learner

    @property
    def learned(self) -> int:
        """Examples the model has learned in its whole life (restored from the checkpoint)."""
        return self.learner.examples

    @property
    def pending(self) -> Pending:
        """The micro-batch being collected (read, not yet learned)."""
        return self.step.pending

    @property
    def next_offset(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last message handled (learned, pending or dead-lettered)."""
        return self.step.next_offset

    @property
    def consumed(self) -> int:
        """Messages read from the examples topic in the model's whole life."""
        return self.model.counts.consumed

    def run(self) -> dict[str, Any]:
        # Also an entry point (tests, benchmarks and embedders run the daemon without the CLI).
        disable_created_series()
        pin_threads(self.cfg.runtime.threads)
        if self.cfg.fleet.enabled:  # a standby until it holds the lease, again if deposed
            return run_member(self.cfg, self.registry, self.checkpointer, self._stop, self)
        return self.learn()

    def learn(self) -> dict[str, Any]:
        """Restore the newest checkpoint, serve, learn until stopped; the summary."""
        self._restored_offsets = self.checkpointer.restore(self.cfg.fingerprint())
        try:
            if self.cfg.serve.enabled:
                self._start_serving()
            return self._run()
        finally:
            if self.publisher is not None:
                self.publisher.stop()
                self.publisher = self.step.publisher = None

    def step_down(self) -> None:
        """Deposed from a fleet: a fresh model and no positions (its successor's checkpoints hold
        the truth); a later takeover restores the newest checkpoint into it."""
        self.model = self.checkpointer.model = ModelState(self.cfg, self.prom)
        self.decoder = self._decoder()
        self.guard.guard, self.guard.checkpoint_owed = self.model.guard, False
        self.step = self._step()  # no positions, nothing pending, no first batch
        self._stop.clear()

    def _decoder(self) -> Decoder:
        m = self.model
        return Decoder(self.cfg.model.n_inputs, m.labels, m.tasks, max_bytes=self.cfg.kafka.max_message_bytes)

    def _step(self) -> TestThenTrain:
        cfg = self.cfg
        step = TestThenTrain(
            self.model,
            self.decoder,
            self.prom,
            self.guard,
            batch_size=self.batch_size,
            max_examples=cfg.runtime.max_examples,
            publish_every=cfg.serve.publish_every,
            stop=self._stop,
            max_poll_records=cfg.kafka.max_poll_records,
        )
        step.publisher = self.publisher
        return step

    def _start_serving(self) -> None:
        self.publisher = Publisher(self.cfg, self.model.guard.served_model, self.learner.name)
        self.serve_port = self.publisher.start()
        self.step.publisher = self.publisher
        self.publisher.publish_model(self.model.guard.served_version)
        self._refresh_gauges()
        self._publish_metrics_text()
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
                ensure_topics(self.cfg.kafka, self.bootstrap)
            # The slowest update bounds how long we may go between polls.
            source = make_source(self.cfg.kafka, self.bootstrap)  # kafka.client
            sink = DeadLetterSink(self.cfg.kafka, self.bootstrap)
            self._sink = sink
            self.guard.connect(self.bootstrap, self.decoder)
            fleet = self.cfg.fleet.enabled
            self.step.next_offset = resume(source, self._restored_offsets, group_commit=not fleet)
            was = self._restored_offsets
            restored = {tp: o for tp, o in self.next_offset.items() if offset_key(tp) in was}
            try:
                source.check_beginning(restored)
            except OffsetOutOfRange as exc:
                self._out_of_range(source, exc)
            self._source = source
            if self.checkpointer.fence is not None:  # a fleet's new active: from now on its epoch wins
                self._checkpoint(source, sink, reason="takeover")
            self.health = BrokerHealth(self.cfg.kafka, self.bootstrap).start()
            self.ready.set()
            if self.publisher is not None:
                self.publisher.set_ready(True)
            # What start-up built (torch, the model, kafka-python, ...) leaves the garbage collector's
            # scans: a full collection then takes ~1 ms instead of ~100 ms, ~25 µs an example.
            gc.freeze()
            try:
                self._loop(source, sink)
            finally:
                gc.unfreeze()
            self._checkpoint(source, sink, reason="stop")
        finally:
            self.step.close()  # the parse-ahead worker
            self.guard.close()
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
    def _loop(self, source: Source, sink: DeadLetterSink) -> None:
        cfg = self.cfg
        if self.step.max_examples_reached():
            log.info(
                "already learned %d >= runtime.max_examples=%s: nothing to do",
                self.learned,
                cfg.runtime.max_examples,
            )
            return
        now = time.monotonic()
        checkpoint_due = Every(
            cfg.checkpoint.every_seconds,
            every_count=cfg.checkpoint.every_examples,
            start=now,
            count=self.learned,
        )
        commit_retry_due = Every(COMMIT_RETRY_S, start=now)
        serving_due = Every(METRICS_EVERY_S, start=now)
        progress_due = Every(cfg.runtime.log_every_seconds, start=now)
        self._rate_mark = (now, self.learned)
        while not self._stop.is_set():
            # -- consume what the broker has: decode, dead-letter, learn each full micro-batch
            self._consume(source, sink) if not self.guard.paused else self._stop.wait(0.1)
            now = time.monotonic()

            # -- checkpoint: at once when an admin asks or after a rollback, else every N examples or T s
            if self._answer_checkpoint_request(source, sink) or self.guard.checkpoint_owed:
                self.guard.checkpoint_owed = self.guard.checkpoint_owed and not self._checkpoint(
                    source, sink, reason="rollback"
                )
                checkpoint_due.restart(now, self.learned)
            elif not self._stop.is_set() and checkpoint_due.due(now, self.learned):
                self._checkpoint(source, sink, reason="periodic")

            # -- commit the offsets a checkpoint written while the broker was down still owes
            if self.checkpointer.commit_owed is not None and self.broker_up and commit_retry_due.due(now):
                self.checkpointer.retry_owed_commit(source)

            # -- about once a second: metrics, the server process, the model it serves
            if serving_due.due(now):
                self._refresh_gauges()
                if self._supervise_server():
                    self._republish_model()
                    self._publish_metrics_text()

            # -- log progress (and tell the demo's status line)
            if progress_due.due(now):
                self._report(source, now)

    def _consume(self, source: Source, sink: DeadLetterSink) -> None:
        """One poll: handle every record, learning each micro-batch as soon as it is full."""
        try:
            self.step.consume(source, sink, self.cfg.kafka.poll_timeout_ms)
        except OffsetOutOfRange as exc:
            self._out_of_range(source, exc)

    def _out_of_range(self, source: Source, exc: OffsetOutOfRange) -> None:
        """kafka.offset_out_of_range: 'fail' raises; a reset learns the pending batch first."""
        policy = self.cfg.kafka.offset_out_of_range
        if self.pending.examples and policy != "fail":  # read from the old log: learn them first
            self.step.learn_pending()
        self.next_offset.update(reset_out_of_range(source, exc, policy, self.prom))

    @property
    def broker_up(self) -> bool:
        return self.health is None or self.health.up

    # -- periodic jobs ------------------------------------------------------------------------
    def _answer_checkpoint_request(self, source: Source, sink: DeadLetterSink) -> bool:
        """Checkpoint now if ``POST /v2/admin/checkpoint`` asked, and answer it; True if it did."""
        requested = self.publisher.checkpoint_requested() if self.publisher is not None else 0
        if not requested or self.publisher is None:
            return False
        action, arg = self.publisher.requested_action()  # checkpoint, or an operator control
        checkpoint = lambda why: self._checkpoint(source, sink, reason=why)  # noqa: E731
        ok = self.guard.operate(action, arg, checkpoint, dict(self.next_offset))
        self.publisher.answer_checkpoint(requested, ok)
        return True

    def _refresh_gauges(self) -> None:
        """Refresh the gauges that are read rather than counted."""
        prom = self.prom
        prom.broker_up.set(int(self.broker_up))
        if self.health is not None and self.health.outages > self._outages_seen:
            prom.broker_outages.inc(self.health.outages - self._outages_seen)
            self._outages_seen = self.health.outages
        prom.observe_prequential(self.model.prequential.snapshot())
        prom.model_version.set(self.learner.updates)
        self.guard.refresh_gauges()
        if self.learner.buffer is not None:
            prom.observe_buffer(self.learner.buffer, self._label_names())
        if self._source is not None:
            safe = self.safe_offsets()
            prom.observe_positions(safe, self._source.lag(safe))
        last = self.checkpointer.last_time
        prom.checkpoint_age.set(time.time() - (last if last is not None else self._started))

    def _supervise_server(self) -> bool:
        """Restart the prediction-server process if it died and tell it whether we are ready.

        False when there is no server to talk to now (none configured, or it cannot be restarted
        yet: tried again next time)."""
        if self.publisher is None:
            return False
        try:
            if self.publisher.restart_if_dead():
                self.prom.serve_restarts.inc()
        except ServingError as exc:
            log.error("%s; trying again in %.0f s", exc, METRICS_EVERY_S)
            return False
        # Not ready while the broker is away: the model is served but no longer learning.
        self.publisher.set_ready(self.ready.is_set() and self.broker_up)
        return True

    def _republish_model(self) -> None:
        """Hand the server the current model if it answers with an older one (``serve.publish_every``
        publishes during learning; this catches up the updates in between and a restarted server)."""
        served = self.model.guard.served_version
        if self.publisher is not None and self.publisher.published_version != served:
            self.publisher.publish_model(served)

    def _publish_metrics_text(self) -> None:
        """Render the metrics into the server's snapshot: its ``/metrics`` appends them to its own."""
        if self.publisher is None:
            return
        self.prom.published_version.set(self.publisher.published_version)
        meta = page_meta(self._label_names(), self.learner.name, self.pending, self.model.tasks)
        meta["guard"] = self.guard.meta()
        self.publisher.publish_text(meta, render(self.registry))

    def _label_names(self) -> list[str]:
        return self.model.labels.names() or [str(i) for i in range(self.cfg.model.n_classes)]

    # -- checkpoints --------------------------------------------------------------------------
    def safe_offsets(self) -> dict[TopicPartition, int]:
        """Next offset per partition such that everything before it is learned or dead-lettered."""
        return self.pending.safe_offsets(self.next_offset)

    def state(self, offsets: dict[TopicPartition, int]) -> dict[str, Any]:
        """The checkpoint dict (see :mod:`streamlearn.model_state`) with these offsets."""
        return self.model.state_dict({offset_key(tp): int(off) for tp, off in offsets.items()})

    def _checkpoint(self, source: Source, sink: DeadLetterSink, *, reason: str) -> bool:
        return self.checkpointer.write(
            source, sink, self.safe_offsets(), broker_up=self.broker_up, reason=reason
        )

    # -- reporting ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Model-lifetime counts (learned, consumed, rejected) and this process's (checkpoints)."""
        rate = 0.0
        if self.step.first_learn is not None:
            t0, n0 = self.step.first_learn
            rate = (self.learned - n0) / max(time.monotonic() - t0, 1e-9)
        offsets = {offset_key(tp): o for tp, o in self.safe_offsets().items()}
        return model_summary(self.model, self.prom, rate, offsets)

    def _report(self, source: Source, now: float) -> None:
        """Log progress and the rate since the last report; hand the same to ``on_progress``."""
        mark_time, mark_learned = self._rate_mark
        rate = (self.learned - mark_learned) / max(now - mark_time, 1e-9)
        self._rate_mark = (now, self.learned)
        s = self.summary()
        s.update(examples_per_s=rate, lag=sum(source.lag(self.safe_offsets()).values()))
        report_progress(s, self.on_progress)

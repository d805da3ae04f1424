"""The daemon's data path: one poll's messages → decoded, dead-lettered or batched → tested, then learned.

Per message: decode and validate (a bad one goes to the dead-letter topic with its reason), collect
valid examples into micro-batches of the learner's size (a task change closes a batch early);
predict each batch with the current model *before* learning it (prequential), then learn.

This runs once per example (MER, ER and SGD learn micro-batches of one), so everything besides the
learner is kept to a few microseconds an example: a poll's messages are parsed in one go, most of
them already parsed by a worker thread while the previous poll's examples were learned
(:mod:`streamlearn.ingest.parse_ahead`; its compiled scanner releases the GIL), and finished in order, the
prequential metrics are queued and recorded in bulk
(:meth:`~streamlearn.evaluation.prequential.PrequentialMetrics.add_probabilities`), so are the
per-update Prometheus values (:mod:`streamlearn.metrics_buffer`), the consumed count is added once
per poll, the model is copied to the server at most every ``PUBLISH_MIN_INTERVAL_S``, and a
one-example batch is a view, not a copy. The ``--breakdown`` of
``benchmarks/daemon_throughput.py`` measures what each step costs.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import torch
from kafka import TopicPartition

from streamlearn.delivery import Pending
from streamlearn.guard.hooks import GuardHooks
from streamlearn.ingest.deadletter import DeadLetterSink
from streamlearn.ingest.decode import Decoder, Example, Parsed, Rejection
from streamlearn.ingest.parse_ahead import ParseAhead
from streamlearn.ingest.source import Source, offset_key
from streamlearn.learners import UpdateStats
from streamlearn.metrics import LearnerMetrics
from streamlearn.model_state import ModelState
from streamlearn.serving.publisher import Publisher

log = logging.getLogger("streamlearn.daemon")  # the daemon's lines, under the daemon's logger

#: The least time between two publishes of the model while learning (gate off). ``serve.publish_every``
#: says every how many updates at most; a learner as fast as SGD (~3,500 updates/s) would otherwise
#: copy its parameters 350 times a second (~37 µs each for the 89,610-parameter MLP, and the copy
#: evicts the learner's own working set from the cache). So the served model trails by at most this
#: interval plus ``publish_every`` updates while learning, and the daemon publishes at once when it
#: catches up with the topic (``publish_idle``).
PUBLISH_MIN_INTERVAL_S = 0.02


class TestThenTrain:
    """Handles what the source returns: every message ends learned, pending or dead-lettered.

    Owns the micro-batch being collected (``pending``) and ``next_offset``, the offset after the
    last message handled per partition; the daemon checkpoints ``pending.safe_offsets(next_offset)``.
    ``publisher`` (set by the daemon once serving) is handed the model every ``serve.publish_every``
    updates, no more often than every ``PUBLISH_MIN_INTERVAL_S``, and whenever a poll finds the
    topic caught up; with the promotion gate on, every promotion at once. Runs on the daemon's
    thread; only the parsing of the next poll's records runs on a worker
    (:mod:`streamlearn.ingest.parse_ahead`), and :meth:`close` stops it.
    """

    __test__ = False  # not a pytest class, whatever its name says

    def __init__(
        self,
        model: ModelState,
        decoder: Decoder,
        prom: LearnerMetrics,
        guard: GuardHooks,
        *,
        batch_size: int,
        max_examples: int | None,
        publish_every: int,
        stop: threading.Event,
        max_poll_records: int = 100,
    ) -> None:
        self.model = model
        self.decoder = decoder
        self.prom = prom
        self.guard = guard
        self.batch_size = batch_size
        self.max_examples = max_examples
        self.publish_every = publish_every
        self.stop = stop
        self.pending = Pending()
        self.next_offset: dict[TopicPartition, int] = {}
        self.publisher: Publisher | None = None
        #: perf_counter time before which an every-N-updates publish waits (PUBLISH_MIN_INTERVAL_S)
        self._next_publish = 0.0
        self.sink: DeadLetterSink | None = None
        #: (probabilities, labels, task) of the batches learned but not yet in the prequential
        #: metrics (``_record_scored``, at the end of every poll)
        self._scored: list[tuple[torch.Tensor, list[int], int | None]] = []
        #: (monotonic time, learned) before the first batch of this run and after the last one
        self.first_learn: tuple[float, int] | None = None
        self.last_learn: tuple[float, int] | None = None
        model.prequential.on_drift = self._drifted
        #: parses the next poll's records on a worker thread (started by the first poll; close())
        self.ahead = ParseAhead(decoder.parse, decoder.parse_many)
        #: records a poll hands out at most (kafka.max_poll_records): the worker parses that many
        #: ahead, and a poll that hands out fewer has caught up with the topic
        self.poll_records = max_poll_records

    def close(self) -> None:
        """Stop the parse-ahead worker (a later consume starts it again)."""
        self.ahead.close()

    def max_examples_reached(self) -> bool:
        return self.max_examples is not None and self.model.learner.examples >= self.max_examples

    def consume(self, source: Source, sink: DeadLetterSink, timeout_ms: int) -> None:
        """One poll: handle every record, learning each micro-batch as soon as it is full.

        Raises ``OffsetOutOfRange`` (the daemon applies ``kafka.offset_out_of_range``)."""
        self.sink = sink
        pending, examples, next_offset = self.pending, self.pending.examples, self.next_offset
        finish, batch_size = self.decoder.finish, self.batch_size
        records = list(source.poll(timeout_ms))
        # Parse them all first (no map is read: the same results), then finish each in order; the
        # worker has parsed most of them already while the last poll's examples were learned.
        parsed = self.ahead.parse_all([rec for _, rec in records])
        self.ahead.submit([rec for _, rec in source.peek(self.poll_records)])
        consumed = 0
        try:
            for (tp, rec), first in zip(records, parsed, strict=True):
                consumed += 1
                raw = rec.value
                result = finish(first) if type(first) is Parsed else first
                if type(result) is Example:
                    # A task change closes the batch: a micro-batch belongs to one task.
                    if examples and result.task != examples[0].task:
                        self._learn_batch()
                    pending.add(result, tp, rec.offset, raw)
                else:
                    assert isinstance(result, Rejection)
                    self._reject(sink, tp, rec.offset, raw, result)
                next_offset[tp] = rec.offset + 1
                if len(examples) >= batch_size:
                    self._learn_batch()
                    if self.max_examples_reached():
                        self.stop.set()
                    if self.stop.is_set():
                        break
            else:  # every fetched record handled: our positions are the consumer's
                source.check_range(next_offset)
        finally:
            self._record_scored()
            if consumed:
                self.prom.consumed.inc(consumed)
        if len(records) < self.poll_records:  # caught up with the topic: serve the newest model now
            self.publish_idle()

    def publish_idle(self) -> None:
        """Hand the server the learning model if it has an older one (it went on learning after the
        last every-N publish, or that one waited for ``PUBLISH_MIN_INTERVAL_S``)."""
        self._publish(time.perf_counter())

    def _publish(self, now: float) -> None:
        """Publish the served version unless the server has it already; the interval starts now."""
        publisher, served = self.publisher, self.model.guard.served_version
        if publisher is not None and served != publisher.published_version:
            publisher.publish_model(served)
            self._next_publish = now + PUBLISH_MIN_INTERVAL_S

    def _reject(
        self, sink: DeadLetterSink, tp: TopicPartition, offset: int, raw: bytes, why: Rejection
    ) -> None:
        sink.send(
            raw, reason=why.reason, detail=why.detail, topic=tp.topic, partition=tp.partition, offset=offset
        )
        self.prom.rejected.labels(reason=why.reason).inc()
        log.debug("rejected %s@%d: %s (%s)", offset_key(tp), offset, why.reason, why.detail)

    def learn_pending(self) -> None:
        """Test the pending micro-batch with the current model, learn it, score it, clear it."""
        self._learn_batch()
        self._record_scored()

    def _learn_batch(self) -> None:
        """``learn_pending`` but its score is kept for ``_record_scored`` (once a poll)."""
        t0 = time.perf_counter()
        batch = self.pending.examples
        learner = self.model.learner
        # A one-example batch is a view (MER, ER and SGD learn one at a time); from_numpy costs a
        # third of torch.tensor.
        x = torch.from_numpy(batch[0].x[None] if len(batch) == 1 else np.stack([e.x for e in batch]))
        labels = [e.y for e in batch]
        y = torch.from_numpy(np.array(labels, dtype=np.int64))
        task = batch[0].task
        probs = learner.predict_proba(x)  # test first (the served champion too, gate on) ...
        champion_probs = self.model.guard.champion_predict(x)
        if self.first_learn is None:
            self.first_learn = (time.monotonic(), learner.examples)
        stats = learner.learn(x, y, task=task)  # ... then train
        if stats.undone is not None:
            assert self.sink is not None
            self.guard.dead_letter_undone(self.sink, self.pending, stats.undone, self.prom)
        else:
            # Prequential metrics of the batch, from the predictions made before learning it.
            self._scored.append((probs, labels, task))
            if champion_probs is not None:  # the gate may roll back (and restore the metrics)
                self._record_scored()
                self.guard.learned(probs, champion_probs, y, task, self.pending.sources)
            now = time.perf_counter()
            self._observe_update(stats, now - t0, now)
        self.pending.clear()
        self.last_learn = (time.monotonic(), self.model.learner.examples)

    def _record_scored(self) -> None:
        """Hand the prequential metrics the batches scored since the last call, in one go: one
        array (and, on a GPU, one copy to the host) a poll instead of one a batch."""
        scored = self._scored
        if not scored:
            return
        self._scored = []
        probs = torch.cat([p for p, _, _ in scored])
        labels = [label for _, batch, _ in scored for label in batch]
        runs = [(task, len(batch)) for _, batch, task in scored]
        self.model.prequential.add_runs(probs.cpu().numpy(), labels, runs)

    def _drifted(self, n: int, rolling_accuracy: float) -> None:
        self.prom.drifts.inc()
        log.warning("drift detected by ADWIN after %d examples (rolling accuracy %.3f)", n, rolling_accuracy)

    def _observe_update(self, stats: UpdateStats, seconds: float, now: float) -> None:
        self.prom.observe_update(stats, seconds)
        if self.publisher is None:
            return
        # gate on: each promotion at once; else every publish_every updates, the interval apart
        if self.model.guard.enabled or (
            self.model.learner.updates % self.publish_every == 0 and now >= self._next_publish
        ):
            self._publish(now)

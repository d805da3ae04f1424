"""Per-update Prometheus metrics, recorded in bulk: what :meth:`LearnerMetrics.observe_update` queues.

SGD, ER and MER learn one example an update, SGD ~3,500 a second: a histogram observe, a counter
increment, a gauge set (and La-MAML's three labelled learning-rate gauges) on every update cost
~1.2 µs an example, ~0.4% of SGD's speed. So each update is queued (~0.1 µs) and recorded in bulk
when anything reads the registry — a collector registered before the metrics flushes the queue,
so ``generate_latest``, :func:`~streamlearn.metrics.render` and ``get_sample_value`` see exactly
what recording each update at once gives (counters and histogram exact, gauges the last value) —
and every ``MAX_QUEUED`` updates, which bounds its memory. The queue is a ``deque`` (its append and
popleft are atomic), and one flush runs at a time (the histogram's sum is read, added to and
written back), so reads from other threads lose nothing.

>>> from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
>>> reg = CollectorRegistry()
>>> buf = UpdateBuffer(reg)
>>> hist = Histogram("demo_seconds", "Update time.", buckets=(0.001, 0.01), registry=reg)
>>> n, loss = Counter("demo_learned", "Learned.", registry=reg), Gauge("demo_loss", "Loss.", registry=reg)
>>> buf.bind(hist, n, loss, Gauge("demo_lr", "Rates.", ["stat"], registry=reg))
>>> for s in (0.0005, 0.002, 0.003):
...     buf.add(s, 1, s * 100, {})
>>> reg.get_sample_value("demo_seconds_bucket", {"le": "0.01"}), reg.get_sample_value("demo_learned_total")
(3.0, 3.0)
>>> reg.get_sample_value("demo_loss"), reg.get_sample_value("demo_seconds_bucket", {"le": "0.001"})
(0.3, 1.0)
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

#: updates queued before they are recorded without a read asking
MAX_QUEUED = 1024


def observe_many(hist: Histogram, values: list[float]) -> None:
    """``hist.observe(v)`` for each value (an unlabelled histogram), one increment per bucket hit.

    Uses the histogram's bucket values as ``observe`` does (prometheus_client's ``_buckets``,
    ``_sum`` and ``_upper_bounds``; tests/test_metrics_buffer.py compares both ways). The sum is
    added up in order from its current value, so it is the same float; the caller must be the
    histogram's only writer.
    """
    bounds = hist._upper_bounds
    counts = [0] * len(bounds)
    for v in values:
        counts[bisect_left(bounds, v)] += 1  # the first bucket whose bound is >= v, as observe
    buckets = hist._buckets
    for i, c in enumerate(counts):
        if c:
            buckets[i].inc(c)
    total = hist._sum.get()
    for v in values:
        total += v
    hist._sum.set(total)


class UpdateBuffer:
    """The queue of per-update values; registered in the registry first, so it flushes before a read."""

    def __init__(self, registry: CollectorRegistry) -> None:
        #: (seconds, examples, loss, learning-rate stats) per update, oldest first
        self._queue: deque[tuple[float, int, float, Mapping[str, float]]] = deque()
        self._metrics: tuple[Histogram, Counter, Gauge, Gauge] | None = None
        self._flushing = threading.Lock()  # one flush at a time: observe_many's sum is read-add-write
        registry.register(self)  # a collector: describe() and collect()

    def bind(self, seconds: Histogram, learned: Counter, loss: Gauge, learning_rate: Gauge) -> None:
        """Where the queued values go: update time, examples learned, last loss, last rates by stat."""
        self._metrics = (seconds, learned, loss, learning_rate)

    def add(self, seconds: float, n: int, loss: float, lr_stats: Mapping[str, float]) -> None:
        queue = self._queue
        queue.append((seconds, n, loss, lr_stats))
        if len(queue) >= MAX_QUEUED:
            self.flush()

    def flush(self) -> None:
        """Record every queued update, in order (from any thread)."""
        if not self._queue or self._metrics is None:
            return
        with self._flushing:
            self._flush_queued()

    def _flush_queued(self) -> None:
        queue, popleft = self._queue, self._queue.popleft
        assert self._metrics is not None
        seconds: list[float] = []
        n = 0
        last: tuple[float, int, float, Mapping[str, float]] | None = None
        while queue:  # only this flush pops (the lock); the daemon's thread may still append
            last = popleft()
            seconds.append(last[0])
            n += last[1]
        if last is None:
            return
        hist, learned, loss, learning_rate = self._metrics
        observe_many(hist, seconds)
        learned.inc(n)
        loss.set(last[2])
        for stat, value in last[3].items():
            learning_rate.labels(stat=stat).set(value)

    # -- the collector protocol: no series of its own; collecting flushes the queue first -------
    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        self.flush()
        return []

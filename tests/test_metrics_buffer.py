"""streamlearn.metrics_buffer: per-update metrics queued, then exported exactly as if recorded at once."""

from __future__ import annotations

import random
import threading
import time

from prometheus_client import CollectorRegistry, Histogram

from streamlearn.learners.base import UpdateStats
from streamlearn.metrics import UPDATE_BUCKETS, LearnerMetrics, render
from streamlearn.metrics_buffer import MAX_QUEUED, observe_many


def _exposition(reg: CollectorRegistry) -> list[str]:
    """The text without ``_created`` series (a process-wide switch other tests flip)."""
    return [line for line in render(reg).decode().splitlines() if "_created" not in line]


def _updates(n: int) -> list[tuple[UpdateStats, float]]:
    rng = random.Random(3)
    out = []
    for i in range(n):
        lr = {"mean": rng.random(), "min": 0.0, "max": 1.0} if i % 3 else {}
        # no alignment: observe_update records it at once, as before (only the rest is queued)
        stats = UpdateStats(n=1 + i % 4, loss=rng.random(), lr_stats=lr)
        # bucket bounds themselves too: "<= bound" goes in that bucket
        out.append((stats, rng.choice(UPDATE_BUCKETS) if i % 7 == 0 else rng.expovariate(500)))
    return out


def _at_once(m: LearnerMetrics, updates: list[tuple[UpdateStats, float]]) -> None:
    """What observe_update recorded before it queued: each queued metric at each update."""
    for stats, seconds in updates:
        m.update_seconds.observe(seconds)
        m.learned.inc(stats.n)
        m.update_loss.set(stats.loss)
        for stat, value in stats.lr_stats.items():
            m.learning_rate.labels(stat=stat).set(value)


def test_the_exposition_is_that_of_recording_each_update_at_once() -> None:
    updates = _updates(3 * MAX_QUEUED + 17)  # flushed by size three times, the rest by the read
    queued, direct = CollectorRegistry(), CollectorRegistry()
    m = LearnerMetrics(queued)
    for stats, seconds in updates:
        m.observe_update(stats, seconds)
    _at_once(LearnerMetrics(direct), updates)
    assert _exposition(queued) == _exposition(direct)
    assert queued.get_sample_value("streamlearn_examples_learned_total") == sum(s.n for s, _ in updates)


def test_a_read_right_after_an_update_sees_it() -> None:
    reg = CollectorRegistry()
    m = LearnerMetrics(reg)
    m.observe_update(UpdateStats(n=3, loss=0.25, lr_stats={"mean": 0.5}), 0.004)
    assert reg.get_sample_value("streamlearn_examples_learned_total") == 3
    assert reg.get_sample_value("streamlearn_update_loss") == 0.25
    assert reg.get_sample_value("streamlearn_learning_rate", {"stat": "mean"}) == 0.5
    assert reg.get_sample_value("streamlearn_update_duration_seconds_bucket", {"le": "0.002"}) == 0
    assert reg.get_sample_value("streamlearn_update_duration_seconds_bucket", {"le": "0.005"}) == 1
    m.observe_update(UpdateStats(n=1, loss=0.5), 0.001)
    assert reg.get_sample_value("streamlearn_update_duration_seconds_count") == 2
    assert reg.get_sample_value("streamlearn_update_loss") == 0.5


def test_observe_many_fills_the_buckets_and_sum_observe_does() -> None:
    values = [0.0, 0.001, 0.0011, 5.0, 7.5, -1.0, 0.0005, 0.0005]
    bulk = Histogram("h", "h", buckets=UPDATE_BUCKETS, registry=(r1 := CollectorRegistry()))
    one = Histogram("h", "h", buckets=UPDATE_BUCKETS, registry=(r2 := CollectorRegistry()))
    observe_many(bulk, values)
    for v in values:
        one.observe(v)
    assert _exposition(r1) == _exposition(r2)


def test_reads_from_another_thread_lose_no_update() -> None:
    reg = CollectorRegistry()
    m = LearnerMetrics(reg)
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            render(reg)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for _ in range(20_000):
            m.observe_update(UpdateStats(n=1, loss=0.1), 0.0003)
    finally:
        done.set()
        scraper.join()
    assert reg.get_sample_value("streamlearn_examples_learned_total") == 20_000
    assert reg.get_sample_value("streamlearn_update_duration_seconds_count") == 20_000


def test_flushes_from_several_threads_add_every_value_to_the_sum_once() -> None:
    """The histogram's sum is read, added to and written back by a flush: two flushes at once
    must not both start from the same value (one of them would be lost). The read yields the GIL
    here, so that another flush runs inside that window whenever it can."""
    reg = CollectorRegistry()
    m = LearnerMetrics(reg)
    total = m.update_seconds._sum
    read = total.get

    def slow_read() -> float:
        value = read()
        time.sleep(0)  # let the other threads run between the read and the write back
        return value

    total.get = slow_read  # type: ignore[method-assign]
    done = threading.Event()

    def flush_often() -> None:
        while not done.is_set():
            m._updates.flush()

    flushers = [threading.Thread(target=flush_often) for _ in range(3)]
    for t in flushers:
        t.start()
    try:
        for i in range(5_000):
            m.observe_update(UpdateStats(n=1, loss=0.1), 1.0)  # 1.0: the exact sum is the count
            if i % 10 == 0:
                time.sleep(0)  # and let the flushers find updates to flush
    finally:
        done.set()
        for t in flushers:
            t.join()
    m._updates.flush()
    assert reg.get_sample_value("streamlearn_update_duration_seconds_count") == 5_000
    assert read() == 5_000.0


def test_the_module_examples_hold() -> None:
    import doctest

    from streamlearn import metrics_buffer

    result = doctest.testmod(metrics_buffer)
    assert result.attempted >= 5 and result.failed == 0

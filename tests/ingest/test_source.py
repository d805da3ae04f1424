"""KafkaSource.poll on the real broker: kafka-python is drained at once, records are handed out
``kafka.max_poll_records`` at a time, in order, and a seek or reset drops what was drained."""

from __future__ import annotations

import time

from kafka import TopicPartition

from streamlearn.config.schema import KafkaConfig
from streamlearn.ingest.broker import EmbeddedBroker
from streamlearn.ingest.source import KafkaSource
from streamlearn.produce import produce


def _offsets(source: KafkaSource, want: int, timeout_s: float = 20.0) -> list[list[int]]:
    """The offsets of each poll's records until ``want`` records came (empty polls left out)."""
    polls: list[list[int]] = []
    deadline = time.monotonic() + timeout_s
    while sum(map(len, polls)) < want and time.monotonic() < deadline:
        got = [rec.offset for _, rec in source.poll(200)]
        if got:
            polls.append(got)
    return polls


def test_records_come_in_order_max_poll_records_at_a_time_and_a_seek_drops_the_rest(
    broker: EmbeddedBroker, topic: str, unique_group: str
) -> None:
    produce([{"x": [float(i)], "y": 0} for i in range(7)], broker.bootstrap_servers, topic, progress=None)
    cfg = KafkaConfig(topic=topic, group_id=unique_group, max_poll_records=3)
    source = KafkaSource(cfg, broker.bootstrap_servers)
    try:
        source.assign()
        source.seek({})  # no checkpoint, no commit: the beginning (auto_offset_reset=earliest)
        polls = _offsets(source, 7)
        assert [o for p in polls for o in p] == list(range(7))
        assert max(map(len, polls)) == 3
        # A poll that stops early leaves the rest for the next poll ...
        source.seek({f"{topic}:0": 1})
        first = next(iter(source.poll(5000)))
        assert first[1].offset == 1
        assert [o for p in _offsets(source, 2) for o in p][:2] == [2, 3]
        # ... and a seek drops what was drained but not handed out: reading restarts there.
        source.seek({f"{topic}:0": 5})
        assert [o for p in _offsets(source, 2) for o in p] == [5, 6]
        # reset (kafka.offset_out_of_range) drops the partition's drained records as well
        source.seek({f"{topic}:0": 0})
        assert next(iter(source.poll(5000)))[1].offset == 0
        assert source.reset(TopicPartition(topic, 0), "latest") == 7
        assert list(source.poll(200)) == []
    finally:
        source.close()


def test_peek_shows_what_the_next_polls_hand_out_and_a_seek_drops_it(
    broker: EmbeddedBroker, topic: str, unique_group: str
) -> None:
    # three producer runs: the records come in several fetches, each pipelined after the last one
    for start in (0, 4, 8):
        msgs = [{"x": [float(i)], "y": 0} for i in range(start, start + 4)]
        produce(msgs, broker.bootstrap_servers, topic, progress=None)
    cfg = KafkaConfig(topic=topic, group_id=unique_group, max_poll_records=2)
    source = KafkaSource(cfg, broker.bootstrap_servers)
    try:
        source.assign()
        source.seek({})
        seen: list[int] = []
        deadline = time.monotonic() + 20
        while len(seen) < 12 and time.monotonic() < deadline:
            ahead = source.peek(2)
            got = list(source.poll(200))
            if ahead:  # what peek showed is exactly what the poll handed out: the same records
                assert [rec for _, rec in ahead] == [rec for _, rec in got]
                assert all(a is b for (_, a), (_, b) in zip(ahead, got, strict=True))
            seen += [rec.offset for _, rec in got]
        assert seen == list(range(12))  # every record once, in order, across all the fetches
        source.seek({f"{topic}:0": 3})
        assert next(iter(source.poll(5000)))[1].offset == 3
        assert [rec.offset for _, rec in source.peek(100)] == list(range(4, 12))[: len(source.peek(100))]
        source.seek({f"{topic}:0": 0})
        assert source.peek(5) == []  # dropped by the seek: nothing read ahead survives it
    finally:
        source.close()

"""kafka-python's repeated messages are limited; everything else passes untouched."""

from __future__ import annotations

import logging

from streamlearn.logs import RepeatLimiter


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeats_of_a_kafka_message_pass_once_per_window_with_a_count(monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("streamlearn.logs.time.monotonic", lambda: clock[0])
    f = RepeatLimiter(every_s=60.0)
    first = record("kafka.net.manager", "Connection failed: %s", "ECONNREFUSED")
    assert f.filter(first) and first.getMessage() == "Connection failed: ECONNREFUSED"
    passed = [f.filter(record("kafka.net.manager", "Connection failed: %s", i)) for i in range(30)]
    assert not any(passed)
    assert f.filter(record("kafka.cluster", "Connection failed: %s", 1))  # another logger: its own count
    assert f.filter(record("kafka.net.manager", "Metadata refresh failed"))  # another message too
    assert f.filter(record("streamlearn.daemon", "checkpoint failed"))
    assert all(f.filter(record("streamlearn.daemon", "checkpoint failed")) for _ in range(5))  # ours: all

    clock[0] += 61
    later = record("kafka.net.manager", "Connection failed: %s", "ECONNREFUSED")
    assert f.filter(later)
    assert later.getMessage() == "Connection failed: ECONNREFUSED [and 30 more like this in the last 61 s]"
    assert not f.filter(record("kafka.net.manager", "Connection failed: %s", "x"))

"""``kafka.client: librdkafka`` on the real (tansu) broker: LibrdkafkaSource keeps KafkaSource's contract
(every record once, in order; peek; explicit positions; commits; out-of-range), and a daemon on it
learns every example exactly once across a restart and a kill -9."""

from __future__ import annotations

import json
import logging
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from kafka import TopicPartition

from streamlearn.config import load_config_dict
from streamlearn.config.schema import KafkaConfig
from streamlearn.errors import ConfigError
from streamlearn.ingest.broker import EmbeddedBroker
from streamlearn.ingest.source import KafkaSource, OffsetOutOfRange, SourceError
from streamlearn.ingest.source_librdkafka import ErrorLog, LibrdkafkaSource, make_source
from streamlearn.produce import produce, stream_messages
from tests.integration.daemon_process import DaemonLog
from tests.integration.test_daemon import (  # noqa: F401  (_reap_daemons: autouse, kills leftovers)
    _checkpointed_offset,
    _final_params,
    _learn_to_the_end,
    _reap_daemons,
    _resumed_from,
    _start,
    _write_config,
    committed,
    make_config,
    run_in_thread,
)


def _source(broker: EmbeddedBroker, topic: str, group: str, **kw: int) -> LibrdkafkaSource:
    return LibrdkafkaSource(
        KafkaConfig(topic=topic, group_id=group, client="librdkafka", **kw), broker.bootstrap_servers
    )


@contextmanager
def _assigned(broker: EmbeddedBroker, topic: str, group: str, **kw: int) -> Iterator[LibrdkafkaSource]:
    """A source with its partitions assigned (not yet positioned), closed afterwards."""
    source = _source(broker, topic, group, **kw)
    try:
        source.assign()
        yield source
    finally:
        source.close()


def _produce_numbered(broker: EmbeddedBroker, topic: str, n: int) -> None:
    """n records whose x is their offset."""
    produce([{"x": [float(i)], "y": 0} for i in range(n)], broker.bootstrap_servers, topic, progress=None)


def test_every_record_once_in_order_and_peek_shows_the_next_poll(
    broker: EmbeddedBroker, topic: str, unique_group: str
) -> None:
    for start in (0, 4, 8):  # three producer runs: several fetches
        msgs = [{"x": [float(i)], "y": 0} for i in range(start, start + 4)]
        produce(msgs, broker.bootstrap_servers, topic, progress=None)
    source = _source(broker, topic, unique_group, max_poll_records=3)
    try:
        (tp,) = source.assign()
        assert source.seek({}) == {f"{topic}:0": "beginning (auto_offset_reset=earliest)"}
        assert source.position(tp) == 0
        seen: list[int] = []
        deadline = time.monotonic() + 20
        while len(seen) < 12 and time.monotonic() < deadline:
            ahead = source.peek(3)
            got = list(source.poll(200))
            assert len(got) <= 3
            if ahead:  # the very records the poll hands out
                assert all(a is b for (_, a), (_, b) in zip(ahead, got, strict=True))
            for key, rec in got:
                assert key == tp and type(key) is TopicPartition  # kafka-python's: dict keys, checkpoints
                assert json.loads(rec.value)["x"] == [float(rec.offset)]
            seen += [rec.offset for _, rec in got]
        assert seen == list(range(12))
        assert (
            source.position(tp) == 12 and source.lag({tp: 12}) == {tp: 0} and source.lag({tp: 7}) == {tp: 5}
        )
        source.seek({f"{topic}:0": 5})  # a seek drops what was drained: reading restarts there
        assert [rec.offset for _, rec in source.poll(5000)] == [5, 6, 7]
        source.seek({f"{topic}:0": 0})
        # what was drained (8..11) is gone; peek may already take the new position's first records
        assert [rec.offset for _, rec in source.peek(5)] == list(range(len(source.peek(5))))
        assert next(iter(source.poll(5000)))[1].offset == 0
    finally:
        source.close()


def test_peek_takes_more_from_librdkafka_when_the_drained_records_run_short(
    broker: EmbeddedBroker, topic: str, unique_group: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parse-ahead worker parses what peek shows: when a drain runs out, the next poll's records
    # must be there already, not parsed on the daemon's thread after the next drain.
    monkeypatch.setattr("streamlearn.ingest.source_librdkafka.DRAIN_RECORDS", 150)
    _produce_numbered(broker, topic, 250)
    with _assigned(broker, topic, unique_group, max_poll_records=100) as source:
        source.seek({})
        first = [rec.offset for _, rec in source.poll(5000)]
        assert first == list(range(100))  # a drain takes 150 at most: 50 are left drained
        ahead: list[int] = []
        deadline = time.monotonic() + 20
        while len(ahead) < 100 and time.monotonic() < deadline:  # librdkafka fetches in the background
            ahead = [rec.offset for _, rec in source.peek(100)]
            time.sleep(0.05)
        assert ahead == list(range(100, 200))
        assert [rec.offset for _, rec in source.poll(5000)] == ahead  # the very records peek showed
        assert [rec.offset for _, rec in source.poll(5000)] == list(range(200, 250))


def test_commit_is_the_groups_committed_offset_and_a_new_source_resumes_there(
    broker: EmbeddedBroker, topic: str, unique_group: str
) -> None:
    _produce_numbered(broker, topic, 8)
    tp = TopicPartition(topic, 0)
    with _assigned(broker, topic, unique_group) as source:
        source.seek({})
        assert source.commit({tp: 5}) is True
    assert committed(broker, unique_group, topic) == 5  # as kafka-python (and kafka-consumer-groups) see it
    with _assigned(broker, topic, unique_group) as again:
        assert again.seek({}) == {f"{topic}:0": "committed offset 5"}
        assert again.position(tp) == 5
        assert next(iter(again.poll(5000)))[1].offset == 5
        # a fleet never reads the group's commit: the reset policy decides
        assert again.seek({}, group_commit=False) == {f"{topic}:0": "beginning (auto_offset_reset=earliest)"}


def test_a_position_beyond_the_high_watermark_is_out_of_range_and_reset_applies_the_policy(
    broker: EmbeddedBroker, topic: str, unique_group: str
) -> None:
    _produce_numbered(broker, topic, 3)
    tp = TopicPartition(topic, 0)
    with _assigned(broker, topic, unique_group) as source:
        source.seek({f"{topic}:0": 10})  # a checkpoint of a topic since recreated with 3 records
        with pytest.raises(OffsetOutOfRange) as caught:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # as the daemon: poll, then compare with the log's end
                assert list(source.poll(200)) == []
                source.check_range({tp: 10})
        assert caught.value.offsets == {tp: 10}
        assert "beyond the end of the log" in str(caught.value)
        source.check_range({tp: 3})  # the end itself is in range
        assert source.reset(tp, "latest") == 3
        assert list(source.poll(500)) == []
        assert source.reset(tp, "earliest") == 0
        assert next(iter(source.poll(5000)))[1].offset == 0


def test_kafka_client_chooses_the_source_and_a_bad_one_is_a_config_error_naming_the_key(
    broker: EmbeddedBroker, topic: str
) -> None:
    for client, kind in (("librdkafka", LibrdkafkaSource), ("kafka-python", KafkaSource)):
        source = make_source(KafkaConfig(topic=topic, client=client), broker.bootstrap_servers)  # type: ignore[arg-type]
        try:
            assert type(source) is kind
        finally:
            source.close()
    for cfg, why in (
        (KafkaConfig(topic=topic, partitions=[3]), r"has no partition\(s\) \[3\]; it has \[0\]"),
        (KafkaConfig(topic=f"{topic}-missing"), "has no partitions"),
    ):
        source = LibrdkafkaSource(cfg, broker.bootstrap_servers)
        try:
            with pytest.raises(SourceError, match=why):
                source.assign(timeout_s=1.0)
        finally:
            source.close()
    with pytest.raises(ConfigError, match=r"kafka\.client"):
        load_config_dict({"kafka": {"client": "rdkafka"}}, "test")
    assert load_config_dict({"kafka": {"client": "librdkafka"}}, "test").kafka.client == "librdkafka"
    assert load_config_dict({}, "test").kafka.client == "librdkafka"  # the default


def test_a_daemon_on_librdkafka_learns_each_example_once_across_a_restart(broker, topic, tmp_path) -> None:
    n = 600
    produce(stream_messages("rotated-mnist-10k", 1), broker.bootstrap_servers, topic, limit=n, progress=None)
    # the same stream through kafka-python: the reference model
    straight = make_config(
        broker, topic, tmp_path, kafka={"client": "kafka-python"}, runtime={"max_examples": n}
    )
    straight["checkpoint"]["dir"] = str(tmp_path / "straight")
    run_in_thread(straight)
    reference, _ = _final_params(straight["checkpoint"]["dir"])

    cfg = make_config(broker, topic, tmp_path, kafka={"client": "librdkafka"}, runtime={"max_examples": 250})
    daemon, summary = run_in_thread(cfg)
    assert summary["learned"] == 250
    assert _checkpointed_offset(cfg["checkpoint"]["dir"], topic) == 250
    assert committed(broker, cfg["kafka"]["group_id"], topic) == 250
    cfg["runtime"]["max_examples"] = n
    daemon, summary = run_in_thread(cfg)
    consumed = daemon.registry.get_sample_value("streamlearn_examples_consumed_total")
    assert summary["learned"] == n and consumed == n - 250, "the restart read only what was not learned"
    params, state = _final_params(cfg["checkpoint"]["dir"])
    assert state["learner"]["examples"] == n and state["offsets"] == {f"{topic}:0": n}
    for name, v in reference.items():
        assert torch.equal(v, params[name]), f"{name} differs from the kafka-python run"
    assert committed(broker, cfg["kafka"]["group_id"], topic) == n


@pytest.mark.parametrize("client", ["librdkafka", "kafka-python"])
def test_kill_9_then_a_restart_learns_every_example_once_on_either_client(
    broker, topic, tmp_path: Path, client: str
) -> None:
    n = 2000
    produce(stream_messages("rotated-mnist-10k", 2), broker.bootstrap_servers, topic, limit=n, progress=None)
    base = make_config(
        broker,
        topic,
        tmp_path,
        kafka={"client": client},
        learner={"name": "mer", "hparams": {"batches_per_example": 2}},
        checkpoint={"every_examples": 40},
        runtime={"max_examples": n},
    )
    straight = json.loads(json.dumps(base))
    straight["checkpoint"]["dir"] = str(tmp_path / "straight")
    straight["kafka"]["group_id"] += "-straight"
    assert run_in_thread(straight)[1]["learned"] == n
    reference, _ = _final_params(straight["checkpoint"]["dir"])

    proc = _start(_write_config(base, tmp_path, "crashy"))
    log = DaemonLog(proc)
    assert _resumed_from(log, topic).startswith("beginning")
    log.wait_for(r"checkpoint \(periodic\)")
    time.sleep(random.Random(0).uniform(0.0, 0.3))
    assert proc.poll() is None, "the daemon finished before it could be killed: make the stream longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    k = _checkpointed_offset(base["checkpoint"]["dir"], topic)
    assert k is not None and 0 < k < n
    start, consumed = _learn_to_the_end(base, tmp_path, topic, n)
    assert start == k and consumed == n - k
    params, state = _final_params(base["checkpoint"]["dir"])
    assert state["learner"]["examples"] == n and state["offsets"] == {f"{topic}:0": n}
    for name, v in reference.items():
        assert torch.equal(v, params[name]), f"{name} differs from the uninterrupted run"
    assert committed(broker, base["kafka"]["group_id"], topic) == n


def test_librdkafka_client_errors_are_logged_once_per_kind_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from confluent_kafka import KafkaError

    errors = ErrorLog(every_s=60)
    with caplog.at_level(logging.WARNING, logger="streamlearn.ingest.source_librdkafka"):
        for _ in range(5):  # a broker down: librdkafka retries every few hundred ms
            errors(KafkaError(KafkaError._TRANSPORT, "connection refused"))
        errors(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert [r.getMessage() for r in caplog.records] == [
        "librdkafka: connection refused",
        "librdkafka: 1/1 brokers are down",
    ]
    errors.every_s = 0  # the interval passed: the next one is logged with how many were not
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamlearn.ingest.source_librdkafka"):
        errors(KafkaError(KafkaError._TRANSPORT, "connection refused"))
    assert [r.getMessage() for r in caplog.records] == [
        "librdkafka: connection refused (4 more like it not logged)"
    ]

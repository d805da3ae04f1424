"""Broker outages: the daemon keeps serving, says the broker is down, reconnects, loses nothing.

The broker here keeps its data across a crash: tansu with ``--storage-engine s3://`` against a
local S3 stand-in (moto_server on 127.0.0.1), so a ``kill -9`` of tansu is a real outage, not a
reset to an empty cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import KafkaConfig, load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import EmbeddedBroker, create_topic
from streamlearn.ingest.deadletter import DeadLetterError, DeadLetterSink
from streamlearn.produce import produce, stream_messages
from tests.integration.daemon_process import DaemonLog, scrape, start_daemon, wait_for
from tests.integration.test_admin import TOKEN, post
from tests.integration.test_daemon import committed, make_config, read_topic
from tests.integration.test_serving import BAD, request, samples
from tests.s3_server import client, moto_server

pytestmark = pytest.mark.integration

BUCKET = "tansu"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto_server on a free loopback port with one empty bucket: tansu's S3 storage."""
    with moto_server(tmp_path_factory.mktemp("moto")) as (endpoint, _proc):
        client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture
def durable_broker(s3_endpoint: str, tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A tansu whose topics, records and committed offsets live in S3 (a fresh prefix per test)."""
    env = {
        "AWS_ENDPOINT": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    broker = EmbeddedBroker(
        storage_engine=f"s3://{BUCKET}/",
        env=env,
        cluster_id=f"c-{uuid.uuid4().hex[:8]}",
        log_dir=tmp_path / "tansu",
    )
    with broker:
        yield broker


def test_s3_backed_tansu_keeps_topics_records_and_offsets_across_kill_9(durable_broker, unique_group) -> None:
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    create_topic(durable_broker.bootstrap_servers, topic)
    sent = produce(
        stream_messages("rotated-mnist-10k", 1),
        durable_broker.bootstrap_servers,
        topic,
        progress=None,
        limit=50,
    )
    tp = TopicPartition(topic, 0)
    c = KafkaConsumer(bootstrap_servers=durable_broker.bootstrap_servers, group_id=unique_group)
    c.assign([tp])
    c.commit({tp: OffsetAndMetadata(37, "", -1)})
    c.close()

    pid = durable_broker.pid
    durable_broker.kill()
    assert pid is not None and not _alive(pid)
    durable_broker.start()

    assert len(read_topic(durable_broker, topic, sent)) == sent == 50
    c = KafkaConsumer(bootstrap_servers=durable_broker.bootstrap_servers, group_id=unique_group)
    try:
        assert c.committed(tp) == 37
    finally:
        c.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _ready(port: int) -> int:
    return request(port, "GET", "/v2/health/ready")[0]


def _metric(port: int, name: str) -> float:
    status, text = request(port, "GET", "/metrics")
    assert status == 200
    return samples(text)[(name, ())]


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_daemon_rides_out_a_broker_crash(durable_broker, tmp_path, client) -> None:
    broker = durable_broker
    topic = f"examples-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap_servers, topic)
    cfg = make_config(broker, topic, tmp_path, kafka={"client": client}, checkpoint={"every_seconds": 1.0})
    stream = list(stream_messages("rotated-mnist-10k", 1))
    produce([*BAD, *stream[:300]], broker.bootstrap_servers, topic, progress=None)

    daemon = Daemon(load_config_dict(cfg, "test"))
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(daemon.run()))
    runner.start()
    try:
        wait_for(lambda: daemon.serve_port is not None, 60)
        port = daemon.serve_port
        assert port is not None
        wait_for(lambda: _metric(port, "streamlearn_examples_learned_total") == 300, 60)
        wait_for(lambda: committed(broker, cfg["kafka"]["group_id"], topic) == 303, 30)
        assert _ready(port) == 200 and _metric(port, "streamlearn_broker_up") == 1

        broker.kill()
        # Down: said in metrics and readiness; predictions are still answered.
        wait_for(lambda: _metric(port, "streamlearn_broker_up") == 0, 15)
        assert _ready(port) == 503
        status, body = request(port, "POST", "/predict", {"x": stream[0]["x"]})
        assert status == 200, body
        assert _metric(port, "streamlearn_broker_outages_total") == 1
        # Periodic checkpoints (every second) fall due while it is down: they are still written.
        written = _metric(port, "streamlearn_checkpoints_written_total")
        wait_for(lambda: _metric(port, "streamlearn_checkpoints_written_total") >= written + 2, 15)
        assert _metric(port, "streamlearn_broker_up") == 0 and runner.is_alive()

        broker.start()  # same port, same S3 data
        wait_for(lambda: _metric(port, "streamlearn_broker_up") == 1, 30)
        wait_for(lambda: _ready(port) == 200, 10)

        produce([*stream[300:600], BAD[0], BAD[1]], broker.bootstrap_servers, topic, progress=None)
        wait_for(
            lambda: (
                _metric(port, "streamlearn_examples_learned_total") == 600
                and _metric(port, "streamlearn_examples_consumed_total") == 605
            ),
            60,
        )
    finally:
        daemon.request_stop()
        runner.join(timeout=60)
    assert not runner.is_alive()

    # Nothing lost, nothing learned twice, offsets committed to the end.
    assert result["learned"] == 600 and result["consumed"] == 605 and result["rejected"] == 5
    assert result["offsets"] == {f"{topic}:0": 605}
    assert committed(broker, cfg["kafka"]["group_id"], topic) == 605
    letters = read_topic(broker, f"{topic}.dlq", 5)
    assert sorted({r.key.decode() for r in letters}) == sorted(
        f"{topic}:0:{o}" for o in (0, 1, 2, 303 + 300, 303 + 301)
    )
    assert result["checkpoint_failures"] == 0


def test_checkpoints_written_during_an_outage_are_committed_after_it(durable_broker, tmp_path) -> None:
    """A checkpoint taken during the outage is written (file and metric) although its offsets cannot be
    committed; once the broker is back, with nothing new to learn and no checkpoint falling due, the
    group's committed offset catches up to it. Checkpoints are taken on request (POST
    /v2/admin/checkpoint), never periodically, so what moves the committed offset is known."""
    broker = durable_broker
    topic = f"examples-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap_servers, topic)
    cfg = make_config(
        broker,
        topic,
        tmp_path,
        checkpoint={"every_examples": 100_000, "every_seconds": 3600},  # no periodic checkpoint
        serve={"auth_token": TOKEN},
    )
    group, key = cfg["kafka"]["group_id"], f"{topic}:0"
    offset = ("streamlearn_consumer_offset", (("partition", "0"), ("topic", topic)))
    store = CheckpointStore(cfg["checkpoint"]["dir"])
    stream = list(stream_messages("rotated-mnist-10k", 1))
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = start_daemon(path)
    try:
        port = DaemonLog(proc).port()
        produce(stream[:100], broker.bootstrap_servers, topic, progress=None)
        wait_for(lambda: scrape(port).get(offset) == 100, 60)
        status, body = post(port, "/v2/admin/checkpoint", TOKEN)
        assert status == 200 and body["checkpoint"] == "written", body
        assert committed(broker, group, topic) == 100
        produce(stream[100:250], broker.bootstrap_servers, topic, progress=None)
        wait_for(lambda: scrape(port).get(offset) == 250, 60)

        broker.kill()
        wait_for(lambda: _metric(port, "streamlearn_broker_up") == 0, 15)
        written = _metric(port, "streamlearn_checkpoints_written_total")
        status, body = post(port, "/v2/admin/checkpoint", TOKEN)
        assert status == 200 and body["checkpoint"] == "written", body
        wait_for(lambda: _metric(port, "streamlearn_checkpoints_written_total") == written + 1, 10)
        latest = store.latest()
        assert latest is not None and latest[1]["offsets"] == {key: 250}
        assert _metric(port, "streamlearn_broker_up") == 0

        broker.start()  # same port, same S3 data: the group's commit from before the outage is kept
        wait_for(lambda: _metric(port, "streamlearn_broker_up") == 1, 30)

        def in_group() -> int | None:
            return committed(broker, group, topic)

        wait_for(lambda: in_group() == 250, 30, show=in_group)
        # the deferred commit moved it, not a new checkpoint
        assert _metric(port, "streamlearn_checkpoints_written_total") == written + 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_daemon_killed_during_an_outage_resumes_from_its_checkpoint(durable_broker, tmp_path) -> None:
    broker = durable_broker
    topic = f"examples-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap_servers, topic)
    cfg = make_config(broker, topic, tmp_path, checkpoint={"every_examples": 100, "every_seconds": 30})
    cfg["runtime"]["log_every_seconds"] = 0.5
    stream = list(stream_messages("rotated-mnist-10k", 1))
    produce(stream[:300], broker.bootstrap_servers, topic, progress=None)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlearn.cli", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = CheckpointStore(cfg["checkpoint"]["dir"])
    try:
        wait_for(lambda: (f := store.latest()) is not None and f[1]["offsets"] == {f"{topic}:0": 300}, 90)
        broker.kill()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    broker.start()
    produce(stream[300:500], broker.bootstrap_servers, topic, progress=None)
    cfg["runtime"]["max_examples"] = 500
    daemon = Daemon(load_config_dict(cfg, "test"))
    summary = daemon.run()
    assert summary["learned"] == 500 and summary["offsets"] == {f"{topic}:0": 500}
    assert committed(broker, cfg["kafka"]["group_id"], topic) == 500


def test_dead_letters_sent_while_the_broker_is_down_are_kept_until_acknowledged(durable_broker) -> None:
    dlq = f"dlq-{uuid.uuid4().hex[:8]}"
    create_topic(durable_broker.bootstrap_servers, dlq)
    sink = DeadLetterSink(KafkaConfig(dead_letter_topic=dlq), durable_broker.bootstrap_servers)
    where = {"topic": "examples", "partition": 0}
    try:
        sink.send(b"a", reason="not_json", detail="", offset=0, **where)
        sink.flush()
        durable_broker.kill()
        sink.send(b"b", reason="not_json", detail="", offset=1, **where)
        with pytest.raises(DeadLetterError, match="1 dead letter"):
            sink.flush(timeout_s=1.0)
        assert sink.pending == 1  # kept, so the daemon will not commit past it
        durable_broker.start()
        sink.flush(timeout_s=30.0)
        assert sink.pending == 0
    finally:
        sink.close()
    letters = read_topic(durable_broker, dlq, 3, timeout_s=5.0)
    assert [r.key.decode() for r in letters] == ["examples:0:0", "examples:0:1"]  # each exactly once

"""Fleet: identical ``streamlearn run`` processes on one config, one active learner, standbys that
serve and take over; fencing of a paused (zombie) active. Real tansu broker (a process that outlives
the daemons), real S3 API (moto_server), daemons as processes killed with real signals."""

from __future__ import annotations

import http.client
import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import load_config_dict
from streamlearn.delivery import resume
from streamlearn.ingest.source import KafkaSource
from streamlearn.produce import produce, stream_messages
from tests.integration.daemon_process import scrape, wait_for
from tests.integration.fleet_helpers import (
    Member,
    PacedProducer,
    Relay,
    assert_same_model,
    copy,
    final_state,
    late_commit,
    listed,
    write_config,
)
from tests.integration.test_daemon import committed, make_config, run_in_thread
from tests.s3_server import client, moto_server
from tests.test_checkpoint_s3 import use_endpoint

pytestmark = pytest.mark.integration

N = 1500
RATE = 120.0  # examples/s: the stream lasts ~12 s, long enough for a takeover in the middle
LEASE_S = 3.0


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as (endpoint, _proc):
        yield endpoint


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> str:
    use_endpoint(monkeypatch, s3_endpoint)  # the daemons inherit the environment
    name = f"fleet-{uuid.uuid4().hex[:12]}"
    client(s3_endpoint).create_bucket(Bucket=name)
    return name


def fleet_config(broker: Any, topic: str, tmp_path: Path, bucket: str) -> dict[str, Any]:
    return make_config(
        broker,
        topic,
        tmp_path,
        checkpoint={"dir": f"s3://{bucket}/model", "every_examples": 100, "every_seconds": 1},
        runtime={"max_examples": N},
        fleet={"enabled": True, "lease_seconds": LEASE_S},
    )


def reference_params(cfg: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The uninterrupted run: one plain learner (no fleet), same seed, same stream, its own group."""
    straight = copy(cfg)
    straight["checkpoint"]["dir"] = str(tmp_path / "straight")
    straight["kafka"]["group_id"] += "-straight"
    straight.pop("fleet")
    _, summary = run_in_thread(straight)
    assert summary["learned"] == N
    return final_state(straight["checkpoint"]["dir"])["learner"]["model"]


def ready(port: int) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/v2/health/ready")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def role(port: int) -> dict[str, float]:
    return {dict(k[1])["role"]: v for k, v in scrape(port).items() if k[0] == "streamlearn_role"}


def check_end(cfg: dict[str, Any], broker: Any, topic: str, reference: dict[str, Any]) -> None:
    state = final_state(cfg["checkpoint"]["dir"])
    assert state["learner"]["examples"] == N, "learned == produced (nothing lost, nothing twice)"
    assert state["offsets"] == {f"{topic}:0": N}
    assert_same_model(reference, state["learner"]["model"])
    assert committed(broker, cfg["kafka"]["group_id"], topic) == N


def test_one_learns_the_other_serves_and_takes_over_after_kill_9(broker, topic, tmp_path, bucket) -> None:
    cfg = fleet_config(broker, topic, tmp_path, bucket)
    config = write_config(cfg, tmp_path / "fleet.yaml")
    producer = PacedProducer(broker.bootstrap_servers, topic, N, RATE)
    a = Member(config)
    b = None
    try:
        a.wait_for(r"fleet: active learner .* epoch 1$")
        a_port = int(a.wait_for(r"(?<!standby )serving on http://[^ ]+:(\d+) \(POST")[1][1])
        b = Member(config)
        b.wait_for(r"fleet: standby")
        b_port = int(b.wait_for(r"standby serving on http://[^ ]+:(\d+) ")[1][1])
        a.wait_for(r"checkpoint \(periodic\) ckpt-\d+-\d+-e1\.slc")
        # the standby serves the active's newest checkpoint, and both say what they are
        wait_for(lambda: ready(b_port)[0] == 200, 30, show=lambda: ready(b_port))
        assert ready(b_port)[1] == {"ready": True, "role": "standby"}
        assert ready(a_port)[1] == {"ready": True, "role": "active"}
        assert role(b_port) == {"standby": 1.0}
        assert role(a_port) == {"active": 1.0, "standby": 0.0}
        assert not b.has(r"consuming |restored "), "a standby reads no examples"

        a.kill()  # kill -9 while the producer sends
        i, _ = b.wait_for(r"fleet: active learner .* epoch 2$", timeout_s=60)
        b.wait_for(r"restored ckpt-\d+-\d+-e1\.slc", start=i)
        b.wait_for(r"consuming .* from checkpoint offset \d+", start=i)
        assert b.proc.wait(timeout=120) == 0, "".join(b.lines[-30:])  # max_examples reached
    finally:
        a.kill()
        if b is not None:
            b.kill()
    assert producer.join() == N
    assert all(epoch == 2 for _, epoch in listed(cfg["checkpoint"]["dir"]) if _.startswith("ckpt-"))
    check_end(cfg, broker, topic, reference_params(cfg, tmp_path))


def test_a_paused_active_is_deposed_steps_down_and_its_late_commit_changes_nothing(
    broker, topic, tmp_path, bucket
) -> None:
    cfg = fleet_config(broker, topic, tmp_path, bucket)
    config = write_config(cfg, tmp_path / "fleet.yaml")
    producer = PacedProducer(broker.bootstrap_servers, topic, N, RATE)
    a = Member(config)
    b = None
    try:
        a.wait_for(r"fleet: active learner .* epoch 1$")
        b = Member(config)
        b.wait_for(r"fleet: standby")
        a.wait_for(r"checkpoint \(periodic\) ckpt-")
        a.proc.send_signal(signal.SIGSTOP)  # a zombie: alive, holding its sockets, not renewing
        i, _ = b.wait_for(r"fleet: active learner .* epoch 2$", timeout_s=60)
        b.wait_for(r"checkpoint \(takeover\) ckpt-\d+-\d+-e2\.slc", start=i)  # epoch 2 wins from here
        b.wait_for(r"checkpoint \(periodic\) ckpt-\d+-\d+-e2\.slc", start=i)
        # The commit the zombie may have had in flight (paused after its last lease check) lands now,
        # as far ahead as the stream goes: resuming from it would skip examples. Nobody resumes from it.
        late_commit(broker.bootstrap_servers, cfg["kafka"]["group_id"], topic, N)
        woke = len(a.lines)
        a.proc.send_signal(signal.SIGCONT)
        a.wait_for(r"fleet: deposed", start=woke)
        a.wait_for(r"fleet: stepped down to standby", start=woke)
        port = int(a.wait_for(r"standby serving on http://[^ ]+:(\d+) ", start=woke)[1][1])
        wait_for(lambda: ready(port)[0] == 200, 30, show=lambda: ready(port))
        assert ready(port)[1] == {"ready": True, "role": "standby"}, "it serves, as a standby"
        assert role(port) == {"standby": 1.0}
        assert a.proc.poll() is None, "a deposed active keeps running"
        # A write already in flight when it was paused may land, but it commits nothing and loses.
        late = [ln for ln in a.lines[woke:] if re.search(r"checkpoint \(\w+\) ckpt-", ln)]
        assert all("-e1.slc" in ln and "not committed: leadership" in ln for ln in late), late
        newest = CheckpointStore(cfg["checkpoint"]["dir"]).latest_info()
        assert newest is not None and newest.epoch == 2
        # kill -9 the new active (or it has finished): the old one takes over again, from epoch 2's
        # newest checkpoint — not from the late commit — and learns to the end.
        b.kill()
        k, _ = a.wait_for(r"fleet: active learner .* epoch 3$", start=woke, timeout_s=60)
        a.wait_for(r"restored ckpt-\d+-\d+-e2\.slc", start=k)
        a.wait_for(r"consuming .* from checkpoint offset \d+", start=k)
        assert a.proc.wait(timeout=120) == 0, "".join(a.lines[-30:])
    finally:
        if a.proc.poll() is None:
            a.proc.send_signal(signal.SIGCONT)
        a.kill()
        if b is not None:
            b.kill()
    assert producer.join() == N
    check_end(cfg, broker, topic, reference_params(cfg, tmp_path))


def test_a_fleet_never_resumes_from_the_groups_committed_offset(broker, topic, tmp_path) -> None:
    """What makes a late commit harmless: a fleet member resumes only from a checkpoint's offsets;
    a partition the checkpoint lacks starts per ``auto_offset_reset``, never at the group's commit."""
    cfg = load_config_dict(make_config(broker, topic, tmp_path), "test")
    produce(stream_messages("rotated-mnist-10k", n_tasks=2), broker.bootstrap_servers, topic, limit=20)
    late_commit(broker.bootstrap_servers, cfg.kafka.group_id, topic, 7)
    tp = TopicPartition(topic, 0)
    for group_commit, expected in ((True, 7), (False, 0)):
        source = KafkaSource(cfg.kafka, broker.bootstrap_servers)
        try:
            assert resume(source, {}, group_commit=group_commit)[tp] == expected
            assert resume(source, {f"{topic}:0": 12}, group_commit=group_commit)[tp] == 12
        finally:
            source.close()


def test_a_store_outage_stops_checkpoints_and_commits_not_learning_nor_serving(
    broker, topic, tmp_path, bucket, s3_endpoint, monkeypatch
) -> None:
    relay = Relay(int(s3_endpoint.rsplit(":", 1)[1]))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay.port}")  # the daemons go through it
    cfg = fleet_config(broker, topic, tmp_path, bucket)
    config = write_config(cfg, tmp_path / "fleet.yaml")
    producer = PacedProducer(broker.bootstrap_servers, topic, N, rate=25.0)  # ~60 s: outlives the outage
    a = Member(config)
    b = None
    group = cfg["kafka"]["group_id"]
    try:
        a.wait_for(r"fleet: active learner .* epoch 1$")
        port = int(a.wait_for(r"(?<!standby )serving on http://[^ ]+:(\d+) \(POST")[1][1])
        b = Member(config)
        b.wait_for(r"fleet: standby")
        a.wait_for(r"checkpoint \(periodic\) ckpt-")

        def sample(name: str) -> float:
            assert a.proc.poll() is None, "".join(a.lines[-40:])
            return sum(v for k, v in scrape(port).items() if k[0] == name)

        relay.down()  # the object store is unreachable for 20 s
        cut = len(a.lines)
        learned0 = sample("streamlearn_model_examples_learned")
        failures0 = sample("streamlearn_checkpoint_failures_total")
        wait_for(lambda: sample("streamlearn_checkpoint_failures_total") > failures0, 20)
        frozen = committed(broker, group, topic)
        time.sleep(20)
        assert sample("streamlearn_model_examples_learned") > learned0, "learning went on"
        assert ready(port) == (200, {"ready": True, "role": "active"}), "serving went on"
        assert committed(broker, group, topic) == frozen, "no offset commit without a durable checkpoint"
        assert not b.has(r"fleet: active learner"), "an outage is not a reason to take over"
        relay.up()
        a.wait_for(r"checkpoint \(periodic\) ckpt-\d+-\d+-e1\.slc", start=cut, timeout_s=60)  # recovered
        assert not b.has(r"fleet: active learner"), "the active kept its lease through the outage"
        assert a.proc.wait(timeout=120) == 0, "".join(a.lines[-30:])
    finally:
        a.kill()
        if b is not None:
            b.kill()
    assert producer.join() == N
    check_end(cfg, broker, topic, reference_params(cfg, tmp_path))

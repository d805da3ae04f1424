"""Offsets that left the log (topic recreated): a defined policy, never a silent re-learn or skip."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from kafka import KafkaAdminClient
from kafka.errors import UnknownTopicOrPartitionError

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import create_topic
from streamlearn.ingest.source import OffsetOutOfRange
from streamlearn.produce import produce, stream_messages
from tests.integration.test_daemon import make_config, run_in_thread

pytestmark = pytest.mark.integration


def recreate(broker, topic: str, n_new: int, skip: int = 0) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        # Once in a full CI run the topic was still listed 20 s after an accepted delete (tansu on a
        # loaded 2-core machine; alone it goes within a second): wait longer, and ask again every
        # 10 s in case a client's metadata request brought it back.
        admin.delete_topics([topic])
        deadline = time.monotonic() + 60
        again = time.monotonic() + 10
        while topic in admin.list_topics():
            assert time.monotonic() < deadline, "topic was not deleted"
            if time.monotonic() > again:
                with contextlib.suppress(UnknownTopicOrPartitionError):
                    admin.delete_topics([topic])
                again = time.monotonic() + 10
            time.sleep(0.1)
    finally:
        admin.close()
    create_topic(broker.bootstrap_servers, topic, partitions=1)
    fresh = list(stream_messages("permuted-mnist-10k", 1))[skip : skip + n_new]
    produce(fresh, broker.bootstrap_servers, topic, progress=None)


def latest(cfg: dict) -> dict:
    found = CheckpointStore(cfg["checkpoint"]["dir"]).latest()
    assert found is not None
    return found[1]


def test_recreated_topic_fails_loudly_by_default_then_resets_only_when_told(
    broker, topic, tmp_path: Path
) -> None:
    produce(
        stream_messages("rotated-mnist-10k", 1), broker.bootstrap_servers, topic, progress=None, limit=300
    )
    cfg = make_config(broker, topic, tmp_path, runtime={"max_examples": 300})
    run_in_thread(cfg)
    assert latest(cfg)["offsets"] == {f"{topic}:0": 300}

    # The topic is recreated with 50 new examples: offset 300 no longer exists.
    recreate(broker, topic, 50)

    # Default policy "fail": a clear error, exit code 2, nothing learned or checkpointed.
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({**cfg, "runtime": {"max_examples": 350}}))
    res = subprocess.run(
        [sys.executable, "-m", "streamlearn.cli", "run", "-c", str(cfg_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    assert f"{topic}:0 at offset 300: beyond the end of the log" in res.stderr
    assert "kafka.offset_out_of_range" in res.stderr
    state = latest(cfg)
    assert state["offsets"] == {f"{topic}:0": 300} and state["learner"]["examples"] == 300
    with pytest.raises(OffsetOutOfRange):  # the same through the library
        Daemon(load_config_dict({**cfg, "runtime": {"max_examples": 350}}, "test")).run()

    # "earliest": learn what the topic holds now, from its start — said in the log and counted.
    cfg["kafka"]["offset_out_of_range"] = "earliest"
    cfg["runtime"] = {"max_examples": 350}
    daemon, summary = run_in_thread(cfg)
    assert summary["learned"] == 350 and summary["offsets"] == {f"{topic}:0": 50}
    labels = {"topic": topic, "partition": "0", "policy": "earliest"}
    assert daemon.registry.get_sample_value("streamlearn_offset_resets_total", labels) == 1

    # "latest": skip what the recreated topic holds, learn only what arrives afterwards.
    recreate(broker, topic, 20)
    cfg["kafka"]["offset_out_of_range"] = "latest"
    cfg["runtime"] = {"max_examples": 360}
    late = list(stream_messages("permuted-mnist-10k", 1))[100:110]
    daemon = Daemon(load_config_dict(cfg, "test"))
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(daemon.run()))
    runner.start()
    # produce only once the daemon has found offset 50 out of range and jumped to the end (20)
    labels["policy"] = "latest"
    deadline = time.monotonic() + 60
    while not daemon.registry.get_sample_value("streamlearn_offset_resets_total", labels):
        assert runner.is_alive() and time.monotonic() < deadline, "no reset happened"
        time.sleep(0.05)
    produce(late, broker.bootstrap_servers, topic, progress=None)
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert result["learned"] == 360 and result["offsets"] == {f"{topic}:0": 30}

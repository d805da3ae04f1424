"""``produce.topic_messages``, what ``streamlearn produce --from-topic`` replays: a topic from its
beginning to its end as of the first fetch (tansu's ListOffsets "latest" is not trusted)."""

from __future__ import annotations

import pytest

from streamlearn.ingest.broker import create_topic
from streamlearn.produce import encode, produce, topic_messages

pytestmark = pytest.mark.integration


def test_reads_every_message_once_in_order(broker, topic) -> None:
    sent = [{"x": [1.0], "y": i} for i in range(37)]
    produce(sent, broker.bootstrap_servers, topic, progress=None)
    got = list(topic_messages(broker.bootstrap_servers, topic))
    assert [v for v, _ in got] == [encode(m) for m in sent]


def test_an_empty_topic_reads_as_nothing(broker, topic) -> None:
    create_topic(broker.bootstrap_servers, f"{topic}.empty")
    assert list(topic_messages(broker.bootstrap_servers, f"{topic}.empty", timeout_s=10)) == []


def test_a_golden_set_read_from_a_topic(broker, topic, tmp_path) -> None:
    from streamlearn.config import load_config_dict
    from streamlearn.daemon import Daemon
    from tests.integration.test_daemon import make_config

    golden = [{"x": [0.0] * 784, "y": i % 10, "task": 0} for i in range(25)]
    produce(golden, broker.bootstrap_servers, f"{topic}.golden", progress=None)
    guard = {"gate": True, "golden": f"topic:{topic}.golden", "quarantine_topic": f"{topic}.q"}
    daemon = Daemon(load_config_dict(make_config(broker, topic, tmp_path, guard=guard), "test"))
    daemon.guard.connect(broker.bootstrap_servers, daemon.decoder)
    try:
        loaded = daemon.model.guard.golden
        assert loaded is not None and len(loaded) == 25
        assert len(set(loaded.y.tolist())) == 10  # class indices through the daemon's label map
    finally:
        daemon.guard.close()

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

"""streamlearn.consume: when the learning loop hands the model to the prediction server.

Every ``serve.publish_every`` updates, no more often than ``PUBLISH_MIN_INTERVAL_S``, and at once
when a poll finds the topic caught up. The daemon is built but not run (no broker): the test feeds
its micro-batches itself and reads the shared snapshot the server process would read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from kafka import TopicPartition

from streamlearn import consume
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.produce import encode, stream_messages
from streamlearn.serving.publisher import Publisher

TP = TopicPartition("t", 0)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    raw = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "topic": "t"},
        "learner": {"name": "sgd"},
        "checkpoint": {"dir": str(tmp_path)},
        "serve": {"port": 0, "publish_every": 10},
    }
    d = Daemon(load_config_dict(raw, "test"))
    d.publisher = d.step.publisher = Publisher(d.cfg, d.model.guard.served_model, "sgd")  # no process
    try:
        yield d
    finally:
        d.publisher.stop()


def learn(d: Daemon, n: int) -> None:
    """Decode and learn ``n`` examples, one micro-batch each, as ``consume`` does."""
    msgs = [encode(m) for m, _ in zip(stream_messages("rotated-mnist-10k", 1), range(n), strict=False)]
    for i, raw in enumerate(msgs):
        d.step.pending.add(d.decoder.decode(raw), TP, i, raw)  # type: ignore[arg-type]
        d.step.learn_pending()


def served(d: Daemon) -> tuple[int, np.ndarray]:
    assert d.publisher is not None
    flat = np.empty(d.publisher.snap.n_params, dtype=np.float32)
    return d.publisher.snap.read(flat), flat


def learned_params(d: Daemon) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in d.model.guard.served_model.parameters()])


def test_every_publish_every_updates_without_a_minimum_interval(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consume, "PUBLISH_MIN_INTERVAL_S", 0.0)
    learn(daemon, 25)
    version, params = served(daemon)
    assert version == 20 and daemon.learner.updates == 25
    assert not np.array_equal(params, learned_params(daemon))  # five updates since


def test_the_interval_holds_back_publishes_and_a_caught_up_poll_publishes_the_newest(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consume, "PUBLISH_MIN_INTERVAL_S", 3600.0)
    learn(daemon, 35)
    assert served(daemon)[0] == 10  # the first is due at once; 20 and 30 wait for the interval
    daemon.step.publish_idle()  # what consume does when a poll returns fewer than max_poll_records
    version, params = served(daemon)
    assert version == daemon.learner.updates == 35
    np.testing.assert_array_equal(params, learned_params(daemon))
    assert daemon.publisher is not None and daemon.publisher.published_version == 35

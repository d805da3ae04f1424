"""The promotion gate through the daemon on the real broker.

A producer bug (labels shifted by one) is held by the golden set: the served version stops; after
``guard.rollback_after`` examples the learner rolls back and the examples it learned since the
champion land in the quarantine topic unchanged, with their source in headers; ``streamlearn
produce --from-topic`` replays them. The operator endpoints need the token.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from streamlearn import cli
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import create_topic
from streamlearn.metrics import counter_value
from streamlearn.produce import encode, produce, stream_messages
from streamlearn.streams import load_stream
from tests.integration.test_admin import TOKEN, post
from tests.integration.test_daemon import make_config, read_topic
from tests.integration.test_replica import wait_for
from tests.integration.test_serving import request, samples

pytestmark = pytest.mark.integration


def _golden_file(tmp_path: Path, n: int = 300) -> Path:
    """Task 0's held-out images (never streamed), in the message format."""
    task = load_stream("rotated-mnist-10k", n_tasks=1).tasks[0]
    path = tmp_path / "golden.jsonl"
    lines = [
        json.dumps({"x": task.eval_x[i].tolist(), "y": int(task.eval_y[i]), "task": 0}) for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _messages(clean: int, bad: int) -> list[dict[str, Any]]:
    stream = list(stream_messages("rotated-mnist-10k", 1))
    shifted = [{**m, "y": (m["y"] + 1) % 10} for m in stream[clean : clean + bad]]
    return stream[:clean] + shifted


def _gate_config(broker, topic: str, tmp_path: Path, **guard: Any) -> dict[str, Any]:
    quarantine = f"{topic}.quarantine"
    create_topic(broker.bootstrap_servers, quarantine)
    g = {
        "gate": True,
        "golden": str(_golden_file(tmp_path)),
        "promote_every": 100,
        "rollback_after": 100,
        "quarantine_topic": quarantine,
        **guard,
    }
    return make_config(broker, topic, tmp_path, learner={"name": "sgd"}, guard=g, serve={"auth_token": TOKEN})


def _start(cfg: dict[str, Any]) -> tuple[Daemon, threading.Thread]:
    daemon = Daemon(load_config_dict(cfg, "test"))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    return daemon, runner


def _stop(daemon: Daemon, runner: threading.Thread) -> None:
    daemon.request_stop()
    runner.join(timeout=60)
    assert not runner.is_alive()


def test_label_bug_rolls_back_to_quarantine_and_replays(broker, topic, tmp_path: Path) -> None:
    messages = _messages(clean=600, bad=300)
    produce(messages, broker.bootstrap_servers, topic, progress=None)
    cfg = _gate_config(broker, topic, tmp_path)
    daemon, runner = _start(cfg)
    try:
        wait_for(lambda: daemon.consumed == len(messages) and daemon.serve_port is not None, 120)
        wait_for(lambda: not daemon.guard.checkpoint_owed, 30)
        port = daemon.serve_port
        assert port is not None
        wait_for(
            lambda: (
                samples(request(port, "GET", "/metrics")[1]).get(("streamlearn_rollbacks_total", ()), 0) >= 1
            ),
            10,
        )
        metrics = samples(request(port, "GET", "/metrics")[1])
    finally:
        _stop(daemon, runner)
    assert metrics[("streamlearn_examples_quarantined_total", ())] >= 100  # exported
    quarantined = int(counter_value(daemon.guard.prom.quarantined))  # after the last batch
    assert quarantined >= 100
    # nothing lost: each message is learned by the model, quarantined, or dead-lettered
    summary = daemon.summary()
    assert summary["learned"] + quarantined + summary["rejected"] == len(messages)

    letters = read_topic(broker, cfg["guard"]["quarantine_topic"], quarantined)
    assert len(letters) == quarantined
    bad = 0
    for rec in letters:
        h = {k: v.decode() for k, v in rec.headers}
        assert h["streamlearn.reason"] == "rolled_back" and h["streamlearn.source.topic"] == topic
        offset = int(h["streamlearn.source.offset"])
        assert rec.value == encode(messages[offset]), "quarantined bytes differ from what was produced"
        bad += offset >= 600
    assert bad / quarantined >= 0.8, f"{quarantined - bad} of {quarantined} quarantined were good"

    # after review: replay them to a topic with the documented command
    replay = f"{topic}.replayed"
    create_topic(broker.bootstrap_servers, replay)
    argv = ["produce", "--bootstrap-servers", broker.bootstrap_servers]
    assert cli.main([*argv, "--from-topic", cfg["guard"]["quarantine_topic"], "--to-topic", replay]) == 0
    replayed = read_topic(broker, replay, quarantined)
    assert len(replayed) == len(letters), (len(replayed), len(letters))
    assert sorted(r.value for r in replayed) == sorted(r.value for r in letters)


def test_held_gate_stops_the_served_version_and_operators_need_the_token(
    broker, topic, tmp_path: Path
) -> None:
    messages = _messages(clean=500, bad=400)
    produce(messages, broker.bootstrap_servers, topic, progress=None)
    cfg = _gate_config(broker, topic, tmp_path, rollback_after=0)  # hold, never roll back by itself
    name = cfg.get("serve", {}).get("model_name", "streamlearn")
    daemon, runner = _start(cfg)
    try:
        wait_for(lambda: daemon.consumed == len(messages) and daemon.serve_port is not None, 120)
        port = daemon.serve_port
        assert port is not None

        def guard_meta() -> dict:
            return request(port, "GET", f"/v2/models/{name}")[1]["parameters"].get("guard", {})

        # held, and the metadata (refreshed once a second) caught up with the end of the stream
        wait_for(
            lambda: guard_meta().get("held") and guard_meta()["challenger_version"] == daemon.learner.updates,
            10,
        )
        meta = request(port, "GET", f"/v2/models/{name}")[1]
        guard = meta["parameters"]["guard"]
        assert guard["held"] == "labels"  # the stream contradicts the golden set of its task
        assert guard["champion_version"] < guard["challenger_version"] == daemon.learner.updates
        assert meta["versions"] == [str(guard["champion_version"])]  # the served version stopped
        metrics = samples(request(port, "GET", "/metrics")[1])
        assert metrics[("streamlearn_serving_held", (("reason", "labels"),))] == 1
        assert metrics[("streamlearn_serving_held", (("reason", "golden"),))] == 0
        assert metrics[("streamlearn_snapshot_published_version", ())] == guard["champion_version"]
        gold = {
            m: metrics[("streamlearn_gate_accuracy", (("model", m), ("signal", "golden")))]
            for m in ("champion", "challenger")
        }
        assert gold["challenger"] < gold["champion"] - 0.02

        # operator controls: the token or nothing
        for action in ("pause", "resume", "promote", "rollback"):
            assert post(port, f"/v2/admin/{action}")[0] == 401
            assert post(port, f"/v2/admin/{action}", "wrong")[0] == 401
        assert daemon.model.guard.champion_version == guard["champion_version"]

        assert post(port, "/v2/admin/pause", TOKEN)[0] == 200
        learned = daemon.learned
        produce(_messages(clean=50, bad=0), broker.bootstrap_servers, topic, progress=None)
        time.sleep(1.5)  # several polls' worth: a running learner would have read them
        assert daemon.model.guard.paused and daemon.learned == learned
        assert post(port, "/v2/admin/resume", TOKEN)[0] == 200
        wait_for(lambda: daemon.consumed == len(messages) + 50, 60)

        # promote now, past the gate: the served version jumps to the learner's
        assert post(port, "/v2/admin/promote", TOKEN)[0] == 200
        wait_for(
            lambda: (
                request(port, "GET", f"/v2/models/{name}")[1]["versions"] == [str(daemon.learner.updates)]
            ),
            10,
        )
        assert post(port, "/v2/admin/rollback", TOKEN, {"checkpoint": "nonsense"})[0] == 400
        assert (
            post(port, "/v2/admin/rollback", TOKEN, {"checkpoint": "ckpt-000000000001-000001.slc"})[0] == 503
        )
    finally:
        _stop(daemon, runner)

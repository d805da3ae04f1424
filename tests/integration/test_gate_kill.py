"""kill -9 at random moments around rollbacks: nothing lost, and the served model is the gate's.

A rollback quarantines the journal (acknowledged), resets the learner, then checkpoints. A kill
before that checkpoint restarts from the one before — challenger, champion and journal — and the
same stream rolls back again (the daemon is deterministic under its checkpointed RNGs), so a
message may be quarantined twice, never lost: learned + quarantined (by source offset) +
dead-lettered == produced.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.produce import produce, topic_messages
from tests.integration.daemon_process import DaemonLog
from tests.integration.test_admin import TOKEN, post
from tests.integration.test_daemon import _start, _write_config, read_topic
from tests.integration.test_gate import _gate_config, _messages
from tests.integration.test_replica import wait_for

pytestmark = pytest.mark.integration


def test_kill_9_around_rollbacks_loses_nothing(broker, topic, tmp_path: Path) -> None:
    messages = _messages(clean=300, bad=500)
    produce(messages, broker.bootstrap_servers, topic, progress=None)
    n = len(messages)
    cfg = _gate_config(broker, topic, tmp_path, promote_every=50, rollback_after=50)
    cfg["checkpoint"]["every_examples"] = 40
    config = _write_config(cfg, tmp_path, "crashy")
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        proc = _start(config)
        log = DaemonLog(proc)
        # killed just after a rollback; a run that reaches the end of the stream first ends the series
        m = log.wait_for(r"(rollback: learner reset to the champion)|(lag 0$)", 120)
        if m[1] is not None:
            time.sleep(rng.uniform(0.0, 0.3))
            kills += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if m[1] is None:
            break
    assert kills >= 1

    # the last run goes to the end of the stream
    daemon = Daemon(load_config_dict(json.loads(json.dumps(cfg)), "test"))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        wait_for(lambda: sum(daemon.safe_offsets().values()) == n and not daemon.guard.checkpoint_owed, 180)
    finally:
        daemon.request_stop()
        runner.join(timeout=60)
    assert not runner.is_alive()

    found = CheckpointStore(cfg["checkpoint"]["dir"]).latest()
    assert found is not None
    state = found[1]
    assert state["offsets"] == {f"{topic}:0": n}
    letters = read_topic(broker, cfg["guard"]["quarantine_topic"], n, timeout_s=10)
    offsets = [int(dict(r.headers)["streamlearn.source.offset"]) for r in letters]
    quarantined = set(offsets)
    assert quarantined, "no rollback reached the quarantine topic"
    dead = sum(state["counters"]["rejected"].values())
    assert state["learner"]["examples"] + len(quarantined) + dead == n, (
        state["learner"]["examples"],
        len(quarantined),
        len(offsets),
        dead,
    )
    # the served model is the gate's champion, as checkpointed, never a half-rolled-back learner
    guard = state["guard"]
    assert guard["champion_version"] <= state["learner"]["updates"]
    for name, v in guard["champion"]["learner"]["model"].items():
        assert torch.equal(daemon.model.guard.champion.model.state_dict()[name], v), name


def _source_offsets(broker, topic: str) -> set[int]:
    """The source offsets in a quarantine or dead-letter topic (a message may be there twice)."""
    return {
        int(dict(headers)["streamlearn.source.offset"])
        for _, headers in topic_messages(broker.bootstrap_servers, topic)
    }


def _ask_rollback(port: int, name: str, answers: list[object]) -> None:
    try:
        answers.append(post(port, "/v2/admin/rollback", TOKEN, {"checkpoint": name})[0])
    except OSError as exc:  # killed while answering
        answers.append(exc)


def test_kill_9_around_operator_rollbacks_to_named_checkpoints(broker, topic, tmp_path: Path) -> None:
    """An operator rollback to a named checkpoint unlearns what came after it: those examples are
    read back from the source topic into quarantine, the intent checkpointed first; kill -9s at
    random moments after it begins never lose one nor leave one both learned and quarantined."""
    stream = _messages(clean=900, bad=0)
    n = 0
    cfg = _gate_config(broker, topic, tmp_path, promote_every=50, rollback_after=50)
    cfg["checkpoint"].update(every_examples=40, every_seconds=1, keep=100)
    config = _write_config(cfg, tmp_path, "named")
    store = CheckpointStore(cfg["checkpoint"]["dir"])

    def since_last_rollback() -> list[tuple[str, dict]]:
        """(name, state) of the checkpoints of the newest lineage, oldest first."""
        states = [(i.path.name, store.read(i)) for i in store.list()]
        newest = states[-1][1]["guard"].get("lineage", 0) if states else 0
        return [(name, st) for name, st in states if st["guard"].get("lineage", 0) == newest]

    def caught_up(n: int) -> bool:
        """The newest checkpoint has everything produced so far (and one older of its lineage)."""
        found = since_last_rollback()
        return len(found) >= 2 and sum(found[-1][1]["offsets"].values()) == n

    rng = random.Random(7)
    for _ in range(2):
        produce(stream[n : n + 300], broker.bootstrap_servers, topic, progress=None)
        n += 300
        proc = _start(config)
        log = DaemonLog(proc)
        port = log.port()
        wait_for(lambda: caught_up(n), 60)  # noqa: B023
        target = since_last_rollback()[0][0]
        answers: list[object] = []
        asker = threading.Thread(target=_ask_rollback, args=(port, target, answers))
        asker.start()
        log.wait_for(r"operator: rollback", 30)
        time.sleep(rng.uniform(0.0, 0.3))  # reading, adopting, checkpointing or quarantining
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        asker.join(timeout=30)

    # the last run: one more named rollback, uninterrupted, then to the end of the stream
    produce(stream[n:], broker.bootstrap_servers, topic, progress=None)
    n = len(stream)
    daemon = Daemon(load_config_dict(json.loads(json.dumps(cfg)), "test"))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        wait_for(lambda: daemon.ready.is_set() and daemon.serve_port, 60)
        wait_for(lambda: sum(daemon.safe_offsets().values()) == n and not daemon.guard.checkpoint_owed, 120)
        assert daemon.serve_port is not None
        assert post(daemon.serve_port, "/v2/admin/checkpoint", TOKEN)[0] == 200
        target = since_last_rollback()[0][0]
        assert post(daemon.serve_port, "/v2/admin/rollback", TOKEN, {"checkpoint": target})[0] == 200
        # one written before that rollback is refused: its model learned what is in quarantine now
        first = store.list()[0].path.name
        assert post(daemon.serve_port, "/v2/admin/rollback", TOKEN, {"checkpoint": first})[0] == 503
        assert post(daemon.serve_port, "/v2/admin/checkpoint", TOKEN)[0] == 200
    finally:
        daemon.request_stop()
        runner.join(timeout=60)
    assert not runner.is_alive()

    found = store.latest()
    assert found is not None
    state = found[1]
    assert state["offsets"] == {f"{topic}:0": n}
    assert state["guard"]["lineage"] >= 1 and not state["guard"]["rewind"]  # all sent
    quarantined = _source_offsets(broker, cfg["guard"]["quarantine_topic"])
    dead = _source_offsets(broker, cfg["kafka"]["dead_letter_topic"])
    assert len(quarantined) >= 40
    # learned, or in quarantine / the dead-letter topic: each produced message exactly once
    assert state["learner"]["examples"] + len(quarantined | dead) == n, (
        state["learner"]["examples"],
        len(quarantined),
        len(dead),
    )
    # the served model is the champion the gate (or the operator's rollback) promoted, as checkpointed
    for name, v in state["guard"]["champion"]["learner"]["model"].items():
        assert torch.equal(daemon.model.guard.champion.model.state_dict()[name], v), name

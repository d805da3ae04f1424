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
from streamlearn.produce import produce
from tests.integration.daemon_process import DaemonLog
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

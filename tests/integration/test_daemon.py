"""The daemon against the real (tansu) broker: nothing mocked.

Each test uses its own topics, consumer group and checkpoint directory on the session broker.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from kafka import KafkaConsumer, TopicPartition

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import create_topic
from streamlearn.ingest.deadletter import MAX_VALUE_BYTES
from streamlearn.ingest.decode import Example
from streamlearn.produce import encode, produce, stream_messages
from tests.integration.daemon_process import DaemonLog, accepts, scrape, start_daemon, wait_for

pytestmark = pytest.mark.integration


def make_config(broker, topic: str, tmp_path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": broker.bootstrap_servers,
            "topic": topic,
            "dead_letter_topic": f"{topic}.dlq",
            "group_id": f"g-{uuid.uuid4().hex[:8]}",
            "poll_timeout_ms": 100,
        },
        "learner": {"name": "er", "alignment_every": 0},
        "checkpoint": {"dir": str(tmp_path / "ckpt"), "every_examples": 500, "every_seconds": 30},
        "runtime": {"log_every_seconds": 1.0},
        "serve": {"port": 0},  # any free port: the prediction server runs in every daemon
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    create_topic(broker.bootstrap_servers, f"{topic}.dlq")
    return cfg


def committed(broker, group: str, topic: str) -> int | None:
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id=group, enable_auto_commit=False)
    try:
        return c.committed(TopicPartition(topic, 0))
    finally:
        c.close()


def read_topic(broker, topic: str, n: int, timeout_s: float = 20.0) -> list[Any]:
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            out.extend(recs)
    c.close()
    return out


def run_in_thread(cfg: dict[str, Any]) -> tuple[Daemon, dict[str, Any]]:
    daemon = Daemon(load_config_dict(cfg, "test"))
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(daemon.run()))
    t.start()
    t.join(timeout=240)
    assert not t.is_alive(), "daemon did not stop"
    return daemon, result


def test_end_to_end_learns_the_stream_and_commits_to_the_end(broker, topic, tmp_path) -> None:
    n = 2000
    produce(stream_messages("rotated-mnist-10k", n_tasks=2), broker.bootstrap_servers, topic, progress=None)
    cfg = make_config(broker, topic, tmp_path, runtime={"max_examples": n})
    daemon, summary = run_in_thread(cfg)
    assert summary["learned"] == n and summary["rejected"] == 0
    assert daemon.step.ahead.hits > n // 2  # most records were parsed ahead, on the worker thread
    assert summary["prequential_accuracy"] > 0.6, summary  # chance is 0.1
    assert committed(broker, cfg["kafka"]["group_id"], topic) == n
    info, state = CheckpointStore(cfg["checkpoint"]["dir"]).latest()  # type: ignore[misc]
    assert state["offsets"] == {f"{topic}:0": n}
    assert state["learner"]["examples"] == n
    # the checkpoint is what `checkpoint inspect` shows
    res = subprocess.run(
        [sys.executable, "-m", "streamlearn.cli", "checkpoint", "inspect", str(info.path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["examples_learned"] == n and shown["learner"] == "er"
    assert shown["offsets"] == {f"{topic}:0": n}


def test_prequential_metrics_are_those_of_testing_then_learning_each_example_in_turn(
    broker, topic, tmp_path
) -> None:
    # The daemon hands its scores to the metrics once a poll; that must change no value. SGD, because
    # its updates here are bit-for-bit those of a learner fed one example at a time. ER's are not: with
    # the same inputs, weights, buffer and random state, an update rounds its last bit differently
    # when the example's array lies at another address modulo 64 bytes (numpy promises 16; where
    # the daemon's arrays land differs from a plain loop's), and a few predictions then differ.
    n = 1500
    stream_2 = stream_messages("rotated-mnist-10k", n_tasks=2)
    msgs = [encode(m) for m, _ in zip(stream_2, range(n), strict=False)]
    bad = [b"not json", b'{"x": [1.0], "y": 3}', b'{"y": 3}']
    stream = [m for i, msg in enumerate(msgs) for m in ([msg, bad[i % 3]] if i % 97 == 5 else [msg])]
    produce(stream, broker.bootstrap_servers, topic, progress=None)
    cfg = make_config(broker, topic, tmp_path, learner={"name": "sgd"}, runtime={"max_examples": n})
    daemon, summary = run_in_thread(cfg)
    assert summary["learned"] == n and summary["rejected"] == sum(1 for i in range(n) if i % 97 == 5)
    fresh = Daemon(load_config_dict(cfg, "test"))
    learner, metrics = fresh.model.learner, fresh.model.prequential  # the configured window and delta
    for raw in msgs:
        ex = fresh.decoder.decode(raw)
        assert isinstance(ex, Example)
        x, y = torch.from_numpy(ex.x[None]), torch.tensor([ex.y])
        metrics.update_from_probabilities(learner.predict_proba(x).numpy(), [ex.y], ex.task)
        learner.learn(x, y, task=ex.task)
    assert daemon.model.prequential.state_dict() == metrics.state_dict()
    assert metrics.task_counts == {0: 1000, 1: 500}


BAD_MESSAGES: list[tuple[bytes | None, str]] = [
    (b"this is not json", "not_json"),
    (b'{"x": [0.1, 0.2', "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'{"y": 3}', "missing_x"),
    (b'{"x": "pixels", "y": 3}', "bad_x"),
    (json.dumps({"x": [0.5] * 783, "y": 3}).encode(), "wrong_length"),
    (json.dumps({"x": [0.5] * 783 + ["NaN"], "y": 3}).encode(), "bad_x"),
    (b'{"x": [' + b"NaN," * 783 + b'NaN], "y": 3}', "non_finite"),
    (json.dumps({"x": [0.5] * 784}).encode(), "missing_y"),
    (json.dumps({"x": [0.5] * 784, "y": 1.5}).encode(), "bad_y"),
    (json.dumps({"x": [0.5] * 784, "y": 42}).encode(), "label_out_of_range"),
    (b"\xff\xfe\xfa not utf-8", "not_utf8"),
]


def test_bad_messages_go_to_the_dead_letter_topic_with_their_reason(broker, topic, tmp_path) -> None:
    good = list(stream_messages("permuted-mnist-10k", n_tasks=1))[:240]
    mixed: list[bytes | dict[str, Any]] = []
    expected_bad = []
    for i, msg in enumerate(good):
        mixed.append(msg)
        if i % 20 == 5:
            raw, reason = BAD_MESSAGES[len(expected_bad) % len(BAD_MESSAGES)]
            expected_bad.append((len(mixed), raw, reason))  # its offset on the single partition
            mixed.append(raw)  # type: ignore[arg-type]
    produce(mixed, broker.bootstrap_servers, topic, progress=None)
    cfg = make_config(broker, topic, tmp_path, runtime={"max_examples": len(good)})
    daemon, summary = run_in_thread(cfg)
    assert daemon.step.ahead.hits > 0  # the rejections below come from the parse-ahead worker too
    assert summary["learned"] == len(good), "every good message is learned, including those after bad ones"
    assert summary["rejected"] == len(expected_bad)
    dead = read_topic(broker, f"{topic}.dlq", len(expected_bad))
    assert len(dead) == len(expected_bad)
    for rec, (offset, raw, reason) in zip(dead, expected_bad, strict=True):
        headers = {k: v.decode() for k, v in rec.headers}
        assert rec.value == raw, "the original bytes travel unchanged"
        assert headers["streamlearn.reason"] == reason, headers
        assert headers["streamlearn.source.offset"] == str(offset)
        assert headers["streamlearn.source.partition"] == "0"
        assert rec.key == f"{topic}:0:{offset}".encode()
    assert set(summary["rejected_by_reason"]) == {r for _, _, r in expected_bad}
    assert committed(broker, cfg["kafka"]["group_id"], topic) == len(mixed)


def _write_config(cfg: dict[str, Any], tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_daemons():
    """A failing test must not leave a daemon running (it would keep polling and skew timings)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _start(config: Path) -> subprocess.Popen[str]:
    proc = start_daemon(config)
    _STARTED.append(proc)
    return proc


def _wait_for(proc: subprocess.Popen[str], needle: str, timeout_s: float = 60.0) -> list[str]:
    log = DaemonLog(proc)
    log.wait_for(re.escape(needle), timeout_s)
    return log.lines


def _final_params(ckpt_dir: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    found = CheckpointStore(ckpt_dir).latest()
    assert found is not None
    state = found[1]
    return state["learner"]["model"], state


def test_a_message_too_big_for_the_dead_letter_topic_is_dead_lettered_truncated(
    broker, topic, tmp_path
) -> None:
    """A 1.3 MB message used to crash the daemon (the dead-letter send was over the producer's
    request limit) at the same offset on every restart: a poison pill."""
    good = list(stream_messages("rotated-mnist-10k", 1))[:20]
    big = json.dumps({"x": [0.123456789] * 100_000, "y": 1}).encode()
    produce([good[0], big, *good[1:]], broker.bootstrap_servers, topic, progress=None)
    cfg = make_config(broker, topic, tmp_path, runtime={"max_examples": 20})
    _, summary = run_in_thread(cfg)
    assert summary["learned"] == 20 and summary["rejected_by_reason"] == {"oversized": 1}
    (letter,) = read_topic(broker, f"{topic}.dlq", 1)
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["streamlearn.truncated_from"] == str(len(big))
    assert headers["streamlearn.source.offset"] == "1" and letter.value == big[: len(letter.value)]
    assert len(letter.value) == MAX_VALUE_BYTES
    assert committed(broker, cfg["kafka"]["group_id"], topic) == 21


def _resumed_from(log: DaemonLog, topic: str) -> str:
    """Where the daemon says it starts reading partition 0 ("checkpoint offset K", "beginning ...")."""
    return log.wait_for(rf"consuming {re.escape(topic)}:0 from (.+)$")[1].strip()


def _checkpointed_offset(ckpt_dir: str, topic: str) -> int | None:
    found = CheckpointStore(ckpt_dir).latest()
    return None if found is None else int(found[1]["offsets"][f"{topic}:0"])


def _learn_to_the_end(config: dict[str, Any], tmp_path: Path, topic: str, n: int) -> tuple[int, float]:
    """Run the daemon until everything is learned; (offset it resumed from, messages it consumed).

    Without runtime.max_examples, so the process stays up and its own /metrics can be read once the
    consumer offset reaches n; then SIGTERM (a final checkpoint) and exit 0.
    """
    final = json.loads(json.dumps(config))
    final["runtime"].pop("max_examples", None)
    proc = _start(_write_config(final, tmp_path, "to-the-end"))
    log = DaemonLog(proc)
    port = log.port()
    origin = _resumed_from(log, topic)
    m = re.fullmatch(r"checkpoint offset (\d+)", origin)
    assert m, f"did not resume from a checkpoint: {origin!r}"
    offset = ("streamlearn_consumer_offset", (("partition", "0"), ("topic", topic)))
    wait_for(lambda: scrape(port).get(offset) == n, 240, show=lambda: scrape(port).get(offset))
    consumed = scrape(port)[("streamlearn_examples_consumed_total", ())]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    return int(m[1]), consumed


@pytest.mark.parametrize("learner,hparams", [("mer", {"batches_per_example": 2}), ("lamaml", {"glances": 2})])
def test_kill_9_at_random_points_loses_nothing_and_learns_nothing_twice(
    broker, topic, tmp_path, learner, hparams
) -> None:
    # Three runs each killed within 0.3 s of a periodic checkpoint must leave the stream unfinished:
    # at ~2,000 examples/s (the faster data path) 2,000 examples were not always enough.
    n = 3000
    produce(
        stream_messages("rotated-mnist-10k", n_tasks=3),
        broker.bootstrap_servers,
        topic,
        limit=n,
        progress=None,
    )
    base = make_config(
        broker,
        topic,
        tmp_path,
        learner={"name": learner, "hparams": hparams},
        checkpoint={"every_examples": 40},
        runtime={"max_examples": n},
    )

    straight = json.loads(json.dumps(base))
    straight["checkpoint"]["dir"] = str(tmp_path / "straight")
    straight["kafka"]["group_id"] += "-straight"
    _, summary = run_in_thread(straight)
    assert summary["learned"] == n
    reference, _ = _final_params(straight["checkpoint"]["dir"])

    config = _write_config(base, tmp_path, "crashy")
    ckpt_dir = base["checkpoint"]["dir"]
    rng = random.Random(0)
    resumed = []
    for _ in range(3):
        on_disk = _checkpointed_offset(ckpt_dir, topic)
        proc = _start(config)
        log = DaemonLog(proc)
        origin = _resumed_from(log, topic)
        if on_disk is None:
            assert origin.startswith("beginning"), origin
        else:
            # A resume, not a re-learn from offset 0: the newest checkpoint's offset, inside the stream.
            assert origin == f"checkpoint offset {on_disk}" and 0 < on_disk < n, (origin, on_disk)
            resumed.append(on_disk)
        log.wait_for(r"checkpoint \(periodic\)")  # so that the kill leaves something to resume from
        time.sleep(rng.uniform(0.0, 0.3))
        assert proc.poll() is None, "the daemon finished before it could be killed: make the stream longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert resumed == sorted(resumed) and len(resumed) == 2, resumed

    k = _checkpointed_offset(ckpt_dir, topic)
    assert k is not None and resumed[-1] < k < n
    start, consumed = _learn_to_the_end(base, tmp_path, topic, n)
    assert start == k
    assert consumed == n - k < n, "the last run read only what its checkpoint had not learned"
    params, state = _final_params(ckpt_dir)
    assert state["learner"]["examples"] == n, "learned count equals produced count"
    assert state["offsets"] == {f"{topic}:0": n}
    for name, v in reference.items():
        assert torch.equal(v, params[name]), f"{name} differs from the uninterrupted run"
    assert committed(broker, base["kafka"]["group_id"], topic) == n


def test_kill_9_during_a_checkpoint_write_resumes_from_the_one_before(broker, topic, tmp_path) -> None:
    """SIGKILL while the temporary file of a checkpoint is being written (a wide model makes it ~30 MB,
    so the write takes a while): the half-written file is never loaded, the restart removes it and
    resumes from the previous checkpoint, and the model ends bit-identical to an uninterrupted run."""
    n = 400  # checkpoints fall due per poll of up to 100 records: at 100, 200, 300, 400
    produce(stream_messages("rotated-mnist-10k", 1), broker.bootstrap_servers, topic, limit=n, progress=None)
    base = make_config(
        broker,
        topic,
        tmp_path,
        model={"hidden": [2500, 2500]},
        learner={"name": "sgd"},
        checkpoint={"every_examples": 60, "keep": 10},
        runtime={"max_examples": n},
    )
    straight = json.loads(json.dumps(base))
    straight["checkpoint"]["dir"] = str(tmp_path / "straight")
    straight["kafka"]["group_id"] += "-straight"
    run_in_thread(straight)
    reference, _ = _final_params(straight["checkpoint"]["dir"])

    ckpt_dir = Path(base["checkpoint"]["dir"])
    config = _write_config(base, tmp_path, "crashy")
    for _attempt in range(3):  # a kill can land just after the rename; then try the next write
        proc = _start(config)
        DaemonLog(proc).wait_for(r"consuming ")
        # The first checkpoint finished (a .slc exists), then the next one's temporary file appears:
        # the name pattern of streamlearn/checkpoint.py, ".ckpt-<examples>-<seq>.slc.<pid>.tmp".
        tmp_name = re.compile(rf"^\.ckpt-\d{{12}}-\d{{6}}\.slc\.{proc.pid}\.tmp$")
        deadline = time.monotonic() + 120
        caught = None
        while caught is None and proc.poll() is None and time.monotonic() < deadline:
            names = os.listdir(ckpt_dir) if ckpt_dir.is_dir() else []
            if any(x.endswith(".slc") for x in names):
                caught = next((x for x in names if tmp_name.match(x)), None)
        assert caught is not None, "no checkpoint write seen before the daemon finished"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if (ckpt_dir / caught).exists():
            break
    else:
        pytest.fail("three kills all landed after the rename: make the checkpoint bigger")

    before = CheckpointStore(ckpt_dir).latest()
    assert before is not None
    k = int(before[1]["offsets"][f"{topic}:0"])
    assert 0 < k < n
    assert int(caught.split("-")[1]) > k, "the half-written file was the newer checkpoint"
    proc = _start(config)
    log = DaemonLog(proc)
    log.wait_for(r"removed 1 half-written checkpoint file")
    assert _resumed_from(log, topic) == f"checkpoint offset {k}"
    proc.wait(timeout=240)
    assert proc.returncode == 0, "".join(log.lines[-30:])
    assert not (ckpt_dir / caught).exists()
    params, state = _final_params(str(ckpt_dir))
    assert state["learner"]["examples"] == n and state["offsets"] == {f"{topic}:0": n}
    for name, v in reference.items():
        assert torch.equal(v, params[name]), f"{name} differs from the uninterrupted run"
    assert committed(broker, base["kafka"]["group_id"], topic) == n


def test_kill_9_of_the_learner_closes_its_prediction_port(broker, topic, tmp_path) -> None:
    """README: the learner dies -> its prediction server exits with it (no stale model answers)."""
    produce(
        stream_messages("rotated-mnist-10k", 1), broker.bootstrap_servers, topic, limit=200, progress=None
    )
    cfg = make_config(broker, topic, tmp_path)
    proc = _start(_write_config(cfg, tmp_path, "doomed"))
    log = DaemonLog(proc)
    port = log.port()
    log.wait_for(r"consuming ")
    wait_for(lambda: ("streamlearn_ready", ()) in scrape(port), 30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    t0 = time.monotonic()
    # the parent-death signal is immediate; the server's watchdog polls every 0.5 s
    wait_for(lambda: not accepts(port), 5.0, show=lambda: f"port {port} still accepts connections")
    print(f"prediction port closed {time.monotonic() - t0:.2f} s after the learner's SIGKILL")


def test_sigterm_checkpoints_commits_and_exits_0(broker, topic, tmp_path) -> None:
    n = 3000
    produce(stream_messages("rotated-mnist-10k", n_tasks=3), broker.bootstrap_servers, topic, progress=None)
    cfg = make_config(
        broker,
        topic,
        tmp_path,
        learner={"name": "mer"},
        checkpoint={"every_examples": 100_000, "every_seconds": 3600},
    )
    proc = _start(_write_config(cfg, tmp_path, "graceful"))
    _wait_for(proc, "consuming")
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "received SIGTERM" in out
    _, state = _final_params(cfg["checkpoint"]["dir"])
    learned = state["learner"]["examples"]
    assert 0 < learned < n
    assert state["offsets"] == {f"{topic}:0": learned}  # batch size 1, no rejects: offset = learned
    assert committed(broker, cfg["kafka"]["group_id"], topic) == learned

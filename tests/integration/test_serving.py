"""The daemon on the real broker answers predictions while it learns, and /metrics tells the truth."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.produce import produce, stream_messages
from tests.integration.test_daemon import make_config

pytestmark = pytest.mark.integration

BAD = [
    b"not json",
    json.dumps({"x": [0.5] * 3, "y": 1}).encode(),
    json.dumps({"x": [0.5] * 784, "y": 99}).encode(),
]


def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body).encode())
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type", "")
        return resp.status, json.loads(data) if ctype.startswith("application/json") else data.decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@contextlib.contextmanager
def learning_daemon(
    broker: Any, topic: str, tmp_path: Path, *, n_tasks: int, rate: float
) -> Iterator[tuple[Daemon, dict[str, Any]]]:
    """A La-MAML daemon (alignment probed every 5 updates, checkpoints every second) fed the BAD
    messages, then ``n_tasks`` of rotated-mnist-10k at ``rate`` msg/s; stopped on exit."""
    cfg = make_config(
        broker,
        topic,
        tmp_path,
        learner={"name": "lamaml", "alignment_every": 5},
        checkpoint={"every_seconds": 1.0},
    )
    produce(BAD, broker.bootstrap_servers, topic, progress=None)
    stream = stream_messages("rotated-mnist-10k", n_tasks)
    with running(cfg, stream, broker.bootstrap_servers, topic, rate=rate) as daemon:
        yield daemon, cfg


@contextlib.contextmanager
def running(
    cfg: dict[str, Any], messages: Iterable[Any], bootstrap: str, topic: str, *, rate: float
) -> Iterator[Daemon]:
    """A daemon on ``cfg``, in a thread, once it serves and is ready; ``messages`` are produced at
    ``rate`` msg/s meanwhile. Stopped (and the producer joined) on exit."""
    feeder = threading.Thread(
        target=produce,
        args=(messages, bootstrap, topic),
        kwargs={"rate": rate, "progress": None},
        daemon=True,
    )
    feeder.start()
    daemon = Daemon(load_config_dict(cfg, "test"))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not (daemon.serve_port and daemon.ready.is_set()) and runner.is_alive():
            assert time.monotonic() < deadline, "daemon did not become ready"
            time.sleep(0.05)
        yield daemon
    finally:
        daemon.request_stop()
        runner.join(timeout=60)
        feeder.join(timeout=60)
    assert not runner.is_alive()


def test_predictions_follow_the_learning_model_and_metrics_are_sane(broker, topic, tmp_path) -> None:
    n_tasks, n = 3, 3000
    messages = list(stream_messages("rotated-mnist-10k", 1))
    probe_rows = np.asarray([m["x"] for m in messages[:4]], dtype=np.float32)
    with learning_daemon(broker, topic, tmp_path, n_tasks=n_tasks, rate=1500) as (daemon, _cfg):
        port = daemon.serve_port
        assert port is not None
        deadline = time.monotonic() + 60
        seen: list[tuple[int, list[float]]] = []
        while daemon.learned < n and time.monotonic() < deadline + 120:
            status, out = request(port, "POST", "/predict", {"x": probe_rows[0].tolist()})
            assert status == 200, out
            seen.append((out["model_version"], [out["probabilities"][str(i)] for i in range(10)]))
            time.sleep(0.02)
        versions = [v for v, _ in seen]
        assert versions == sorted(versions), "model versions went backwards"
        assert len(set(versions)) >= 5, f"saw only versions {sorted(set(versions))}"
        assert not np.allclose(seen[0][1], seen[-1][1], atol=1e-3), "predictions never changed while learning"

        # Drained: within a publish interval the server answers with exactly the learner's model.
        time.sleep(1.5)
        updates = daemon.learner.updates
        expected = daemon.learner.predict_proba(torch.from_numpy(probe_rows)).numpy()
        status, out = request(port, "POST", "/predict", {"instances": probe_rows.tolist()})
        assert status == 200 and out["model_version"] == updates
        got = np.array([[p["probabilities"][str(i)] for i in range(10)] for p in out["predictions"]])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
        infer = {
            "inputs": [
                {"name": "input-0", "shape": [4, 784], "datatype": "FP32", "data": probe_rows.tolist()}
            ]
        }
        status, out = request(port, "POST", "/v2/models/streamlearn/infer", infer)
        assert status == 200 and out["model_version"] == str(updates)
        probs = next(o for o in out["outputs"] if o["name"] == "probabilities")
        np.testing.assert_allclose(np.array(probs["data"]).reshape(4, 10), expected, rtol=1e-4, atol=1e-6)
        assert request(port, "GET", "/v2/health/ready")[0] == 200

        status, text = request(port, "GET", "/metrics")
        assert status == 200
        m = samples(text)

        def one(name: str, **labels: str) -> float:
            return m[(name, tuple(sorted(labels.items())))]

        assert one("streamlearn_examples_learned_total") == n
        assert one("streamlearn_examples_consumed_total") == n + len(BAD)
        assert one("streamlearn_examples_rejected_total", reason="not_json") == 1
        assert one("streamlearn_examples_rejected_total", reason="wrong_length") == 1
        assert one("streamlearn_examples_rejected_total", reason="label_out_of_range") == 1
        assert 0.5 < one("streamlearn_prequential_accuracy") <= 1.0  # chance is 0.1
        assert 0.5 < one("streamlearn_prequential_accuracy_rolling") <= 1.0
        assert {one("streamlearn_prequential_task_accuracy", task=str(t)) > 0.3 for t in range(n_tasks)} == {
            True
        }
        assert 0 < one("streamlearn_prequential_loss") < 2.3  # below uniform guessing, ln 10
        assert 0.4 < one("streamlearn_prequential_kappa") <= 1.0
        assert one("streamlearn_drift_detections_total") >= 0
        assert -1.0 <= one("streamlearn_gradient_alignment_cosine") <= 1.0
        probes = one("streamlearn_gradient_alignment_cosine_distribution_count")
        assert (
            probes == one("streamlearn_gradient_alignment_dot_distribution_count")
            and probes >= updates // 5 - 1
        )
        lr = {s: one("streamlearn_learning_rate", stat=s) for s in ("min", "mean", "max")}
        assert 0 <= lr["min"] <= lr["mean"] <= lr["max"] and lr["mean"] > 0
        assert one("streamlearn_update_duration_seconds_count") == updates
        assert (
            one("streamlearn_replay_buffer_examples")
            == one("streamlearn_replay_buffer_capacity_examples")
            == 200
        )
        assert (
            sum(one("streamlearn_replay_buffer_class_examples", class_label=str(c)) for c in range(10)) == 200
        )
        assert one("streamlearn_replay_buffer_bytes") >= 200 * 784 * 4
        assert one("streamlearn_consumer_lag_messages", topic=topic, partition="0") == 0
        assert one("streamlearn_consumer_offset", topic=topic, partition="0") == n + len(BAD)
        assert one("streamlearn_checkpoints_written_total") >= 1
        assert one("streamlearn_checkpoint_failures_total") == 0
        assert one("streamlearn_checkpoint_age_seconds") < 5
        assert one("streamlearn_checkpoint_last_success_timestamp_seconds") > time.time() - 10
        assert one("streamlearn_checkpoint_duration_seconds_count") >= 1
        assert one("streamlearn_model_version") == one("streamlearn_serving_model_version") == updates
        assert one("streamlearn_snapshot_published_version") == updates
        assert one("streamlearn_ready") == 1
        assert one("streamlearn_prediction_requests_total", endpoint="predict", code="200") == len(seen) + 1
        assert one("streamlearn_prediction_duration_seconds_count", endpoint="predict") == len(seen) + 1
        build = [k for k in m if k[0] == "streamlearn_build_info"]
        assert dict(build[0][1])["learner"] == "lamaml" and dict(build[0][1])["role"] == "learner"
    with pytest.raises(OSError):  # the server process went with the daemon
        request(port, "GET", "/v2/health/live")


def test_a_killed_prediction_server_is_restarted_on_the_same_port(broker, topic, tmp_path) -> None:
    x = next(iter(stream_messages("rotated-mnist-10k", 1)))["x"]
    with learning_daemon(broker, topic, tmp_path, n_tasks=1, rate=500) as (daemon, _cfg):
        port = daemon.serve_port
        assert port is not None and daemon.publisher is not None and daemon.publisher.process is not None
        old_pid = daemon.publisher.process.pid
        assert request(port, "POST", "/predict", {"x": x})[0] == 200
        os.kill(old_pid, signal.SIGKILL)  # what the OOM killer does

        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the prediction server did not come back"
            try:
                if request(port, "GET", "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert daemon.publisher.process is not None and daemon.publisher.process.pid != old_pid
        status, out = request(port, "POST", "/predict", {"x": x})
        assert status == 200 and out["model_version"] >= 0
        time.sleep(1.5)  # the next metrics refresh carries the restart count
        m = samples(request(port, "GET", "/metrics")[1])
        assert m[("streamlearn_serving_process_restarts_total", ())] == 1
        assert daemon.learned > 0

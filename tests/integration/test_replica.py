"""`streamlearn serve`: a read-only replica serves the newest good checkpoint and hot-reloads."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import find_free_port
from streamlearn.streams import load_stream
from tests.integration.test_serving import request

pytestmark = pytest.mark.integration

CFG = {"learner": {"name": "er", "alignment_every": 0}, "model": {"hidden": [32]}}


def wait_for(pred, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def served_probs(port: int, x: np.ndarray) -> tuple[int, np.ndarray]:
    status, out = request(port, "POST", "/predict", {"instances": x.tolist()})
    assert status == 200, out
    return out["model_version"], np.array(
        [[p["probabilities"][str(i)] for i in range(10)] for p in out["predictions"]]
    )


def test_replica_serves_and_hot_reloads_checkpoints(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ckpt"
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({**CFG, "checkpoint": {"dir": str(ckpt_dir)}}))
    # A learner whose state we checkpoint by hand (no broker needed to make checkpoints).
    learner_side = Daemon(load_config_dict({**CFG, "checkpoint": {"dir": str(ckpt_dir)}}, "test"))
    store = CheckpointStore(ckpt_dir)
    stream = load_stream("rotated-mnist-10k", n_tasks=1)
    xs, ys = stream.tasks[0].train_x, stream.tasks[0].train_y
    probe = np.asarray(xs[:3], dtype=np.float32)

    def learn(k: int) -> None:
        for i in range(k):
            learner_side.learner.learn(torch.as_tensor(xs[i : i + 1]), torch.as_tensor(ys[i : i + 1]))

    port = find_free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlearn.cli",
            "serve",
            "-c",
            str(cfg_path),
            "--port",
            str(port),
            "--poll-seconds",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _live(port))
        assert request(port, "GET", "/v2/health/ready")[0] == 503  # nothing to serve yet
        assert request(port, "POST", "/predict", {"x": probe[0].tolist()})[0] == 503

        learn(50)
        store.save(learner_side.state({}), learner_side.learned)
        wait_for(lambda: request(port, "GET", "/v2/health/ready")[0] == 200)
        version, got = served_probs(port, probe)
        assert version == learner_side.learner.updates == 50
        np.testing.assert_allclose(
            got, learner_side.learner.predict_proba(torch.from_numpy(probe)).numpy(), rtol=1e-4, atol=1e-6
        )

        learn(100)
        store.save(learner_side.state({}), learner_side.learned)
        wait_for(lambda: served_probs(port, probe)[0] == 150)
        np.testing.assert_allclose(
            served_probs(port, probe)[1],
            learner_side.learner.predict_proba(torch.from_numpy(probe)).numpy(),
            rtol=1e-4,
            atol=1e-6,
        )

        # A corrupt "newer" checkpoint (a half-copied file) is skipped; the replica keeps its model.
        (ckpt_dir / "ckpt-000000009999-000001.slc").write_bytes(b"STREAMLEARN-CHECKPOINT-1\n" + b"0" * 100)
        time.sleep(1.0)
        assert served_probs(port, probe)[0] == 150
        assert request(port, "GET", "/v2/health/ready")[0] == 200
        _status, text = request(port, "GET", "/metrics")
        assert 'role="replica"' in text and "streamlearn_serving_reloads_total 2.0" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "not serving ckpt-000000009999-000001.slc" in err and err.count("not serving") == 1, err


def _live(port: int) -> bool:
    try:
        return request(port, "GET", "/v2/health/live")[0] == 200
    except OSError:
        return False

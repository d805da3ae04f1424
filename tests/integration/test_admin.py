"""State-changing endpoints: POST /v2/admin/checkpoint (learner) and /v2/admin/reload (replica).

Both need the bearer token; without serve.auth_token configured they are refused (403), so an
unauthenticated deployment can read predictions but never change state.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import find_free_port
from streamlearn.produce import produce, stream_messages
from streamlearn.streams import load_stream
from tests.integration.test_daemon import committed, make_config
from tests.integration.test_replica import CFG, _live, wait_for

pytestmark = pytest.mark.integration

TOKEN = "admin-token-7f3a"


def post(port: int, path: str, token: str | None = None, body: Any = None) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=90)
    try:
        raw = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Length": str(len(raw))}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request("POST", path, body=raw, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def served_probs(port: int, x: np.ndarray, token: str | None = None) -> tuple[int, np.ndarray]:
    status, out = post(port, "/predict", token, {"instances": x.tolist()})
    assert status == 200, out
    probs = [[p["probabilities"][str(i)] for i in range(10)] for p in out["predictions"]]
    return out["model_version"], np.array(probs)


def test_checkpoint_now_writes_and_commits_what_was_learned(broker, topic, tmp_path: Path) -> None:
    cfg = make_config(
        broker,
        topic,
        tmp_path,
        checkpoint={"every_examples": 100_000, "every_seconds": 3600},  # no periodic checkpoint
        serve={"auth_token": TOKEN},
    )
    produce(
        list(stream_messages("rotated-mnist-10k", 1))[:300], broker.bootstrap_servers, topic, progress=None
    )
    daemon = Daemon(load_config_dict(cfg, "test"))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    store = CheckpointStore(cfg["checkpoint"]["dir"])
    try:
        wait_for(lambda: daemon.learned == 300 and daemon.serve_port is not None, 60)
        port = daemon.serve_port
        assert port is not None
        assert store.latest() is None and committed(broker, cfg["kafka"]["group_id"], topic) is None

        assert post(port, "/v2/admin/checkpoint")[0] == 401
        assert post(port, "/v2/admin/checkpoint", "wrong")[0] == 401
        assert post(port, "/v2/admin/reload", TOKEN)[0] == 404  # the learner serves the live model
        assert store.latest() is None

        status, body = post(port, "/v2/admin/checkpoint", TOKEN)
        assert status == 200 and body["checkpoint"] == "written", body
        found = store.latest()
        assert found is not None
        assert found[1]["learner"]["examples"] == 300 and found[1]["offsets"] == {f"{topic}:0": 300}
        assert committed(broker, cfg["kafka"]["group_id"], topic) == 300
    finally:
        daemon.request_stop()
        runner.join(timeout=60)
    assert not runner.is_alive()


def test_replica_reloads_on_request_and_refuses_without_a_configured_token(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ckpt"
    cfg = {**CFG, "checkpoint": {"dir": str(ckpt_dir)}}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    learner_side = Daemon(load_config_dict(cfg, "test"))
    store = CheckpointStore(ckpt_dir)
    task = load_stream("rotated-mnist-10k", n_tasks=1).tasks[0]
    probe = np.asarray(task.train_x[:3], dtype=np.float32)

    def learn_and_save(k: int) -> None:
        start = learner_side.learned
        for i in range(start, start + k):
            x, y = torch.as_tensor(task.train_x[i : i + 1]), torch.as_tensor(task.train_y[i : i + 1])
            learner_side.learner.learn(x, y)
        store.save(learner_side.state({}), learner_side.learned)

    def start(token: str | None) -> tuple[int, subprocess.Popen[str]]:
        port = find_free_port()
        env = dict(os.environ)
        if token is not None:
            env["STREAMLEARN__SERVE__AUTH_TOKEN"] = token
        cmd = [sys.executable, "-m", "streamlearn.cli", "serve", "-c", str(cfg_path), "--port", str(port)]
        # an hour between polls: only the request makes it look for a new checkpoint
        proc = subprocess.Popen([*cmd, "--poll-seconds", "3600"], env=env, text=True, stderr=subprocess.PIPE)
        wait_for(lambda: _live(port))
        return port, proc

    learn_and_save(20)
    port, proc = start(TOKEN)
    open_port, open_proc = start(None)
    try:
        wait_for(lambda: served_probs(port, probe, TOKEN)[0] == 20)
        learn_and_save(30)
        assert served_probs(port, probe, TOKEN)[0] == 20  # not polled yet

        assert post(port, "/v2/admin/reload")[0] == 401
        assert post(port, "/v2/admin/checkpoint", TOKEN)[0] == 404  # a replica never writes
        status, body = post(port, "/v2/admin/reload", TOKEN)
        assert status == 200 and body["reloaded"] is True and body["model_version"] == 50, body
        version, got = served_probs(port, probe, TOKEN)
        assert version == 50
        expected = learner_side.learner.predict_proba(torch.from_numpy(probe)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
        status, body = post(port, "/v2/admin/reload", TOKEN)
        assert status == 200 and body["reloaded"] is False  # nothing newer

        status, body = post(open_port, "/v2/admin/reload", TOKEN)
        assert status == 403 and "serve.auth_token" in body["error"], body
        assert served_probs(open_port, probe)[0] == 20  # refused means nothing changed
    finally:
        for p in (proc, open_proc):
            p.send_signal(signal.SIGTERM)
            p.communicate(timeout=30)

"""Counts across a restart, as Prometheus and the demo see them (issue 14 item 4; helper C).

``streamlearn_examples_learned_total`` restarts at 0 with the process, as a Prometheus counter
must; ``streamlearn_model_examples_learned`` is the model's lifetime total, restored from the
checkpoint. The second run is the real CLI daemon, scraped over HTTP on its server process's
``/metrics``, which therefore also shows that the entry points disabled the ``_created`` series.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.checkpoint import CheckpointStore
from streamlearn.ingest.broker import find_free_port
from streamlearn.produce import produce, stream_messages
from tests.integration.test_daemon import make_config, run_in_thread

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def test_the_model_total_survives_a_restart_while_the_process_counters_restart(
    broker, topic, tmp_path: Path
) -> None:
    good = list(stream_messages("rotated-mnist-10k", n_tasks=1))[:300]
    messages: list[Any] = [*good[:50], b"not json", *good[50:250], b"[1, 2]", *good[250:]]
    produce(messages, broker.bootstrap_servers, topic, progress=None)
    cfg = make_config(broker, topic, tmp_path, runtime={"max_examples": 200})

    # first life: 200 examples learned, then a checkpoint on the way out
    first, summary = run_in_thread(cfg)
    assert summary["learned"] == 200 and summary["consumed"] == 201
    assert first.registry.get_sample_value("streamlearn_model_examples_learned") == 200
    found = CheckpointStore(cfg["checkpoint"]["dir"]).latest()
    assert found is not None
    assert found[1]["counters"] == {"consumed": 201, "learned": 200, "rejected": {"not_json": 1}}

    # second life: the CLI daemon restores it and learns the last 100
    port = find_free_port()
    cfg["runtime"] = {"log_every_seconds": 0.5}
    cfg["serve"] = {"port": port}
    path = tmp_path / "second.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log_path = tmp_path / "second.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlearn.cli", "run", "-c", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, STREAMLEARN_LOG_LEVEL="INFO"),
        )
    try:
        text, deadline = "", time.monotonic() + 90
        while sample(text, "streamlearn_model_examples_learned") != 300:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.25)
            try:
                text = scrape(port)
            except OSError:
                continue  # the server is not listening yet
        assert sample(text, "streamlearn_examples_learned_total") == 100  # this process only
        assert sample(text, "streamlearn_examples_consumed_total") == 101
        assert sample(text, "streamlearn_examples_rejected_total", reason="not_json") is None
        assert sample(text, "streamlearn_examples_rejected_total", reason="not_object") == 1
        assert "_created" not in text, [line for line in text.splitlines() if "_created" in line][:5]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    _info, state = CheckpointStore(cfg["checkpoint"]["dir"]).latest()  # type: ignore[misc]
    assert state["counters"] == {
        "consumed": 302,
        "learned": 300,
        "rejected": {"not_json": 1, "not_object": 1},
    }
    assert state["offsets"] == {f"{topic}:0": 302}

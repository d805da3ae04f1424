"""The commands a user types, as subprocesses against the real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from kafka import KafkaConsumer, TopicPartition

pytestmark = pytest.mark.integration


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamlearn.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_demo_json_reports_a_learning_run() -> None:
    res = cli("demo", "--learner", "er", "--max-examples", "400", "--json", "--set", "serve.port=0")
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["learned"] == 400 and out["rejected"] == 0 and out["learner"] == "er"
    assert out["prequential_accuracy"] > 0.3 and out["examples_per_s"] > 0
    assert "embedded broker (tansu) listening" not in res.stderr  # demo owns the broker, daemon reuses it


def test_ctrl_c_stops_the_demo_cleanly_with_a_final_checkpoint() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlearn.cli",
            "demo",
            "--set",
            "serve.port=0",
            "--set",
            "learner.name=er",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait until it learns
        seen.append(line)
        if "learned" in line and "ex/s" in line:
            break
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a hung stop: leave no process behind for the rest of the run
            proc.kill()
            proc.communicate()
    err = "".join(seen) + err
    assert proc.returncode == 0, err[-3000:]
    assert "received SIGINT" in err and "checkpoint (stop)" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "learned" in out


def test_produce_a_jsonl_file_then_read_it_back(broker, topic, tmp_path) -> None:
    rows = [{"x": [0.1 * i, 0.2], "y": i % 2, "id": f"r{i}"} for i in range(25)]
    path = tmp_path / "ex.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = cli(
        "produce",
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--topic",
        topic,
        "--file",
        str(path),
        "--rate",
        "500",
    )
    assert res.returncode == 0, res.stderr
    assert "produced 25 messages" in res.stderr
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = []
    for _ in range(20):
        for recs in c.poll(timeout_ms=500).values():
            got.extend(json.loads(r.value) for r in recs)
        if len(got) >= 25:
            break
    c.close()
    assert got == rows


def test_run_with_a_bad_config_exits_2_naming_the_key(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("learner:\n  name: mer\n  hparams:\n    beta: high\n")
    res = cli("run", "-c", str(path), timeout=60)
    assert res.returncode == 2
    assert f"{path}: learner.hparams.beta: expected float, got str 'high'" in res.stderr


@pytest.mark.parametrize("verb", ["run", "demo", "produce", "bench", "checkpoint"])
def test_every_verb_explains_itself(verb) -> None:
    res = cli(verb, "--help", timeout=60)
    assert res.returncode == 0 and "usage:" in res.stdout and len(res.stdout) > 300

"""Checkpoints in object storage (``checkpoint.dir: s3://bucket/prefix``) against a real S3 API (moto_server).

The same guarantees as the local store (tests/test_checkpoint.py): visible only when complete,
verified on read, newest good one chosen, keep-N, interrupted writes cleaned at start — plus what
is particular to a remote store: a store that is down fails a save fast, and polling costs one LIST.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from streamlearn import checkpoint as ck
from streamlearn.config import load_config_dict
from streamlearn.errors import CheckpointError
from tests.s3_server import CREDENTIALS, client, moto_server


def state(i: int) -> dict:
    return {"format": 1, "step": i, "w": torch.full((3, 2), float(i)), "offsets": {"t:0": i * 10}}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as (endpoint, _proc):
        yield endpoint


def use_endpoint(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point the standard AWS variables at the endpoint, as an operator would (nothing in the YAML)."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> Any:
    """A boto3 client on a fresh bucket (``s3.bucket``) with the environment pointing at it."""
    use_endpoint(monkeypatch, s3_endpoint)
    c = client(s3_endpoint)
    c.bucket = f"b-{uuid.uuid4().hex[:12]}"
    c.create_bucket(Bucket=c.bucket)
    return c


def keys(s3: Any, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", []))


def test_save_then_latest_round_trips_and_keeps_the_last_k(s3) -> None:
    url = f"s3://{s3.bucket}/runs/ckpt"
    s3.put_object(Bucket=s3.bucket, Key="runs/ckpt/notes.txt", Body=b"not a checkpoint")
    s3.put_object(Bucket=s3.bucket, Key="runs/ckpt/old/ckpt-000000000001-000001.slc", Body=b"deeper")
    store = ck.CheckpointStore(url, keep=2)
    for i in range(1, 5):
        store.save(state(i), examples=i * 100)
    assert store.wait_for_removals(timeout=10)  # older ones are deleted on a thread, after save
    assert [c.examples for c in store.list()] == [300, 400]
    newest = "runs/ckpt/ckpt-000000000400-000004.slc"
    # pruning removed only checkpoints directly under the prefix, never other objects
    assert keys(s3) == [
        "runs/ckpt/ckpt-000000000300-000003.slc",
        newest,
        "runs/ckpt/notes.txt",
        "runs/ckpt/old/ckpt-000000000001-000001.slc",
    ]
    info, loaded = store.latest()
    assert str(info.path) == f"s3://{s3.bucket}/{newest}" and info.examples == 400
    assert loaded["step"] == 4 and torch.equal(loaded["w"], torch.full((3, 2), 4.0))
    assert store.latest_info() == info and store.read(info)["step"] == 4
    assert ck.read(f"s3://{s3.bucket}/{newest}")["step"] == 4


def test_two_saves_at_the_same_count_are_ordered(s3) -> None:
    store = ck.CheckpointStore(f"s3://{s3.bucket}", keep=5)  # the bucket root works as a prefix too
    store.save(state(1), examples=100)
    store.save(state(2), examples=100)
    assert store.latest()[1]["step"] == 2
    assert keys(s3) == ["ckpt-000000000100-000001.slc", "ckpt-000000000100-000002.slc"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "header"])
def test_a_damaged_newest_object_falls_back_to_the_previous(s3, damage, caplog) -> None:
    store = ck.CheckpointStore(f"s3://{s3.bucket}/p", keep=3)
    store.save(state(1), examples=100)
    newest = store.save(state(2), examples=200)
    key = f"p/{newest.name}"
    blob = bytearray(s3.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    if damage == "truncate":  # what a tool that copies objects without checking would leave
        blob = blob[: len(blob) // 2]
    elif damage == "flip":
        blob[-100] ^= 0x01
    else:
        blob[:5] = b"XXXXX"
    s3.put_object(Bucket=s3.bucket, Key=key, Body=bytes(blob))
    with pytest.raises(CheckpointError):
        ck.read(str(newest))
    info, loaded = store.latest()
    assert loaded["step"] == 1 and info.examples == 100
    assert "skipping unusable checkpoint" in caplog.text and newest.name in caplog.text


def test_an_abandoned_multipart_upload_is_aborted_at_start(s3) -> None:
    store = ck.CheckpointStore(f"s3://{s3.bucket}/p")
    store.save({"offsets": {"t:0": 5}}, 5)
    for key in ("p/ckpt-000000000010-000001.slc", "elsewhere/big.bin"):
        up = s3.create_multipart_upload(Bucket=s3.bucket, Key=key)
        s3.upload_part(Bucket=s3.bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 1024)
    assert [c.examples for c in store.list()] == [5]  # an unfinished upload is never a checkpoint
    assert store.remove_stale_temporaries() == 1
    left = s3.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["elsewhere/big.bin"]  # outside the prefix: not ours
    found = store.latest()
    assert found is not None and found[1]["offsets"] == {"t:0": 5}


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_every_put_carries_the_signed_sha256_of_its_body(monkeypatch, scheme) -> None:
    """Integrity in transit: the server refuses a body that does not match x-amz-content-sha256,
    which is part of the signature. Over HTTPS botocore sends UNSIGNED-PAYLOAD instead whenever a
    checksum header (Content-MD5, as this store used to send) is present, unless payload signing is
    forced, as the client does. The request is the one botocore would send, seen just before it
    goes out; the endpoint (a closed port) never answers."""
    import hashlib

    from streamlearn.checkpoint import s3 as s3_storage

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    use_endpoint(monkeypatch, f"{scheme}://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    prefix = s3_storage.S3Prefix("s3://bucket/p")
    sent: list[dict[str, str]] = []
    prefix.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers))
    )
    blob = os.urandom(4096)
    with pytest.raises(OSError):
        prefix.put("ckpt-000000000001-000001.slc", blob)
    assert len(sent) == 1
    headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in sent[0].items()}
    assert headers["x-amz-content-sha256"] == hashlib.sha256(blob).hexdigest()
    assert "x-amz-content-sha256" in headers["authorization"]  # signed, not just sent


def test_a_store_that_is_down_fails_a_save_in_seconds(monkeypatch, tmp_path) -> None:
    with moto_server(tmp_path) as (endpoint, proc):
        use_endpoint(monkeypatch, endpoint)
        client(endpoint).create_bucket(Bucket="down")
        store = ck.CheckpointStore("s3://down/p")
        store.save(state(1), examples=1)
        proc.terminate()
        proc.wait(timeout=10)
        t0 = time.monotonic()
        with pytest.raises(CheckpointError, match="unreachable"):
            store.save(state(2), examples=2)
        took = time.monotonic() - t0
        with pytest.raises(CheckpointError, match="unreachable"):
            store.latest()
    # 3 attempts with "standard" backoff (≤ 1 s, ≤ 2 s) against a refused port: never a hang
    assert took < 8, took


def test_a_store_that_accepts_but_never_answers_fails_a_save_after_the_read_timeout(monkeypatch) -> None:
    from streamlearn.checkpoint import s3 as s3_storage

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # the kernel completes the handshake; nobody ever answers
        use_endpoint(monkeypatch, f"http://127.0.0.1:{hung.getsockname()[1]}")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the standard variable; 3 attempts by default
        store = ck.CheckpointStore("s3://hung/p")
        t0 = time.monotonic()
        with pytest.raises(CheckpointError, match="timed out"):
            store.save(state(1), examples=1)
        took = time.monotonic() - t0
    assert s3_storage.READ_TIMEOUT_S <= took < s3_storage.READ_TIMEOUT_S + 3, took


def test_polling_the_newest_checkpoint_costs_one_list_and_reads_only_when_it_changed(s3) -> None:
    from streamlearn.daemon import Daemon
    from streamlearn.serving.predictor import Predictor
    from streamlearn.serving.replica import CheckpointSource

    url = f"s3://{s3.bucket}/replica"
    learner = Daemon(load_config_dict({"learner": {"name": "er"}, "checkpoint": {"dir": url}}, "test"))
    learner.learner.learn(torch.rand(2, 784), torch.tensor([0, 1]))
    writer = ck.CheckpointStore(url)
    writer.save(learner.state({}), 2)
    source = CheckpointSource(url, Predictor(learner.cfg.model))  # the replica, unchanged
    calls: Counter[str] = Counter()
    source.store.storage.client.meta.events.register(
        "before-call.s3", lambda model, **_: calls.update([model.name])
    )
    assert source.poll() and source.predictor.view is not None
    assert calls == {"ListObjectsV2": 1, "GetObject": 1}
    assert not source.poll() and not source.poll()
    assert calls == {"ListObjectsV2": 3, "GetObject": 1}  # nothing new: no download
    learner.learner.learn(torch.rand(2, 784), torch.tensor([1, 0]))
    writer.save(learner.state({}), 4)
    assert source.poll() and source.loaded is not None and source.loaded.examples == 4
    assert calls == {"ListObjectsV2": 4, "GetObject": 2}
    assert source.admin("reload")[1]["checkpoint"] == "ckpt-000000000004-000002.slc"


def test_checkpoint_inspect_reads_a_prefix_or_one_object(s3) -> None:
    from streamlearn.learners import make_learner, mlp

    learner = make_learner("mer", mlp(4, 3, (5,)), n_classes=3, memories=5)
    learner.learn(torch.rand(2, 4), torch.tensor([0, 1]))
    store = ck.CheckpointStore(f"s3://{s3.bucket}/p")
    path = store.save({"format": 1, "created": 0, "learner": learner.state_dict(), "offsets": {"t:0": 2}}, 2)
    for target in (f"s3://{s3.bucket}/p", str(path)):
        res = subprocess.run(
            [sys.executable, "-m", "streamlearn.cli", "checkpoint", "inspect", target, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        )
        assert res.returncode == 0, res.stderr
        shown = json.loads(res.stdout)
        assert shown["path"] == f"s3://{s3.bucket}/p/ckpt-000000000002-000001.slc"
        assert shown["learner"] == "mer" and shown["offsets"] == {"t:0": 2}
    empty = subprocess.run(
        [sys.executable, "-m", "streamlearn.cli", "checkpoint", "inspect", f"s3://{s3.bucket}/none"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode != 0 and "no usable checkpoint" in empty.stderr


@pytest.mark.integration
def test_the_daemon_checkpoints_to_s3_and_resumes_from_it(s3, broker, topic, tmp_path) -> None:
    from streamlearn.produce import produce, stream_messages
    from tests.integration.test_daemon import committed, make_config, run_in_thread

    n = 600
    produce(stream_messages("rotated-mnist-10k", n_tasks=1), broker.bootstrap_servers, topic, progress=None)
    url = f"s3://{s3.bucket}/learner"
    cfg = make_config(
        broker, topic, tmp_path, checkpoint={"dir": url, "every_examples": 200, "keep": 2}, runtime={}
    )
    cfg["runtime"]["max_examples"] = n // 2
    _daemon, first = run_in_thread(cfg)
    assert first["learned"] == n // 2 and first["checkpoint_failures"] == 0
    cfg["runtime"]["max_examples"] = n
    _daemon, second = run_in_thread(cfg)  # a restart: learned == n only if it restored from S3
    assert second["learned"] == n and second["checkpoint_failures"] == 0
    assert committed(broker, cfg["kafka"]["group_id"], topic) == n
    info, saved = ck.CheckpointStore(url).latest()  # type: ignore[misc]
    assert saved["offsets"] == {f"{topic}:0": n} and saved["learner"]["examples"] == n
    assert len(keys(s3, "learner/")) == 2 and str(info.path).startswith(url + "/")
    assert not (tmp_path / "ckpt").exists()  # nothing went to local disk

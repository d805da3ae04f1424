"""Checkpoint save and restore time: object storage (``s3://``, moto_server on loopback) vs a local directory.

    python benchmarks/checkpoint_store.py [--repeats 5] [--json]

The checkpoint is the default config's (MER, 784-100-100-10 MLP) with its replay buffer full, as
the daemon writes it (``Daemon.state``). Save = encode + write (local: temporary, fsync, rename,
fsync dir; S3: one PUT with Content-MD5) + retention; restore = list + read + verify SHA-256 +
``torch.load(weights_only=True)``, i.e. ``CheckpointStore.latest()``. Median of ``--repeats``.
The S3 side runs against moto_server (``moto[server]``, a dev dependency) on 127.0.0.1: it
measures the client's own cost (request signing, MD5, HTTP), not a real network's latency or
bandwidth; the target is S3 save ≤ 3× local.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import find_free_port


def full_mer_state(directory: str) -> tuple[dict[str, Any], int]:
    """The daemon's checkpoint dict with the replay buffer full, and the buffer's capacity."""
    import torch

    daemon = Daemon(load_config_dict({"checkpoint": {"dir": directory}}, "bench"))
    buffer = daemon.learner.buffer
    assert buffer is not None, "the default learner replays"
    n = buffer.capacity
    buffer.add(torch.rand(n, buffer.n_inputs), torch.randint(0, 10, (n,)), task=0)
    assert len(buffer) == buffer.capacity
    return daemon.state({}), n


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(store: CheckpointStore, state: dict[str, Any], repeats: int) -> dict[str, float]:
    examples = iter(range(1, 10**6))
    save = median_seconds(lambda: store.save(state, next(examples)), repeats)
    restore = median_seconds(lambda: store.latest(), repeats)
    return {"save_s": save, "restore_s": restore}


def start_moto(log_path: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = find_free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"moto_server did not start (see {log_path})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"http://127.0.0.1:{port}", proc
        time.sleep(0.1)


@contextmanager
def s3_bucket(tmp: Path, bucket: str) -> Iterator[str]:
    """moto_server on loopback with ``bucket`` created, and this process's AWS variables pointing at
    it (so every boto3 client, and a child process started meanwhile, uses it); stopped on exit."""
    endpoint, proc = start_moto(tmp / "moto.log")
    try:
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )
        os.environ.pop("AWS_PROFILE", None)
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="last stdout line is one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-") as tmp, s3_bucket(Path(tmp), "bench"):
        state, capacity = full_mer_state(str(Path(tmp) / "local"))
        local_store = CheckpointStore(Path(tmp) / "local", keep=3)
        local = measure(local_store, state, args.repeats)
        s3 = measure(CheckpointStore("s3://bench/ckpt", keep=3), state, args.repeats)
        nbytes = local_store.list()[-1].path.stat().st_size
    result = {
        "checkpoint_bytes": nbytes,
        "buffer_capacity": capacity,
        "local": local,
        "s3_moto": s3,
        "save_ratio": s3["save_s"] / local["save_s"],
        "restore_ratio": s3["restore_s"] / local["restore_s"],
    }
    print(f"checkpoint: {nbytes / 2**20:.1f} MiB (MER, default config, replay buffer full: {capacity} rows)")
    for what in ("save", "restore"):
        here, there = 1000 * local[f"{what}_s"], 1000 * s3[f"{what}_s"]
        ratio = result[f"{what}_ratio"]
        print(f"{what:8s} local {here:7.1f} ms   s3 (moto) {there:7.1f} ms   ratio {ratio:.2f}x")
    print(f"target S3 save <= 3x local: {'met' if result['save_ratio'] <= 3 else 'NOT met'}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

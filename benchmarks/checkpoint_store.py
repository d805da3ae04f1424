"""Checkpoint save and restore time: object storage (``s3://``, moto_server on loopback) vs a local directory.

    python benchmarks/checkpoint_store.py [--repeats 15] [--json]

The checkpoint is the default config's (MER, 784-100-100-10 MLP) with its replay buffer full, as
the daemon writes it (``Daemon.state``). Save = what ``CheckpointStore.save`` makes its caller (the
learning loop) wait for: encode + write (local: temporary, fsync, rename, fsync dir, then unlink
the oldest; S3: one PUT, the body's SHA-256 signed) until the checkpoint is durable and the newest
listed. In S3 the older checkpoints are then deleted on a thread (one DELETE each): reported as
``retention_s``, awaited between rounds and not counted in ``save_s``, as the daemon saves every
few seconds, not back to back. Restore = list + read + verify SHA-256 +
``torch.load(weights_only=True)``, i.e. ``CheckpointStore.latest()``. Rounds interleave local and
S3 (a machine busy with other work slows both alike); the ratios are the medians of the rounds'
ratios. The S3 side runs against moto_server (``moto[server]``, a dev dependency) on 127.0.0.1: it
measures the client's own cost (request signing, HTTP) plus moto's, a Python server that opens a new
connection for every request; not a real network's latency or bandwidth. The target is S3 save ≤ 3×
local.
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
from collections.abc import Iterator
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


def measure(store: CheckpointStore, state: dict[str, Any], examples: int) -> dict[str, float]:
    """One save (at ``examples``), the wait for its background removals, and one restore: seconds."""
    t0 = time.perf_counter()
    store.save(state, examples)
    t1 = time.perf_counter()
    store.wait_for_removals()
    t2 = time.perf_counter()
    store.latest()
    t3 = time.perf_counter()
    return {"save_s": t1 - t0, "retention_s": t2 - t1, "restore_s": t3 - t2}


def checkpoint_ratios(
    stores: dict[str, CheckpointStore], state: dict[str, Any], rounds: int, gap_s: float = 0.02
) -> dict[str, Any]:
    """``stores`` = {"local": …, "s3_moto": …}: interleaved rounds (local, s3, local, s3, …, the
    side that goes first alternating); per side the medians, and the median of the rounds' ratios."""
    times: dict[str, list[dict[str, float]]] = {k: [] for k in stores}
    order = list(stores)
    for r in range(rounds):
        for where in order if r % 2 == 0 else order[::-1]:
            times[where].append(measure(stores[where], state, r + 1))
            time.sleep(gap_s)  # the other side's server and disk settle, as between two daemon saves
    out: dict[str, Any] = {
        where: {k: statistics.median(t[k] for t in ts) for k in ts[0]} for where, ts in times.items()
    }
    for what in ("save", "restore"):
        pairs = zip(times["s3_moto"], times["local"], strict=True)
        out[f"{what}_ratio"] = statistics.median(s[f"{what}_s"] / loc[f"{what}_s"] for s, loc in pairs)
    out["rounds"], out["gap_s"] = rounds, gap_s
    return out


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
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=20.0,
        help="pause after each measurement (default 20; 0: back to back)",
    )
    parser.add_argument("--json", action="store_true", help="last stdout line is one JSON object")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-") as tmp, s3_bucket(Path(tmp), "bench"):
        state, capacity = full_mer_state(str(Path(tmp) / "local"))
        stores = {
            "local": CheckpointStore(Path(tmp) / "local", keep=3),
            "s3_moto": CheckpointStore("s3://bench/ckpt", keep=3),
        }
        result = checkpoint_ratios(stores, state, args.repeats, args.gap_ms / 1000)
        nbytes = stores["local"].list()[-1].path.stat().st_size
    result.update(checkpoint_bytes=nbytes, buffer_capacity=capacity, load_average=[load, os.getloadavg()[0]])
    print(f"checkpoint: {nbytes / 2**20:.1f} MiB (MER, default config, replay buffer full: {capacity} rows)")
    for what in ("save", "restore"):
        here, there = 1000 * result["local"][f"{what}_s"], 1000 * result["s3_moto"][f"{what}_s"]
        ratio = result[f"{what}_ratio"]
        print(f"{what:8s} local {here:7.1f} ms   s3 (moto) {there:7.1f} ms   ratio {ratio:.2f}x")
    retention = 1000 * result["s3_moto"]["retention_s"]
    print(f"s3 retention DELETE, on its thread after the save: {retention:.1f} ms")
    end = os.getloadavg()[0]
    print(
        f"load average {load:.2f} at start, {end:.2f} at end; {args.repeats} rounds, {args.gap_ms:g} ms apart"
    )
    print(f"target S3 save <= 3x local: {'met' if result['save_ratio'] <= 3 else 'NOT met'}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

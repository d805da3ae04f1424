"""Prediction latency and learning speed under HTTP load, learning running and idle.

    python benchmarks/serving_load.py [--learner mer] [--seconds 5] [--rates 100,200,500] [--json]

Starts the embedded broker, fills a topic with rotated-mnist-10k, runs ``streamlearn run`` as a
separate process (learner + its prediction-server process, as deployed) and loads POST /predict
from this process over keep-alive connections on 127.0.0.1:

- open loop at each fixed rate: request i is due at t0 + i/rate, and its latency is measured from
  when it was *due*, so a stalled server cannot hide its stall (no coordinated omission);
- "max": closed loop, 4 connections back to back.

While learning, load phases alternate with no-load phases, and the learning slowdown of a phase
is its examples/s against the mean of the no-load phases around it. After the topic is drained
the same load runs again against the idle learner. Bounded: about (3·levels + 1)·seconds plus
the time to drain the topic (~3 minutes by default).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from streamlearn.ingest.broker import EmbeddedBroker, create_topic, find_free_port
from streamlearn.produce import produce, stream_messages

N_CONN = 4


def scrape(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for name in ("streamlearn_examples_learned_total", "streamlearn_consumer_lag_messages"):
        m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
        out[name] = float(m.group(1)) if m else float("nan")
    return out


def load(port: int, body: bytes, rate: float | None, seconds: float) -> dict[str, Any]:
    """Open loop at ``rate`` requests/s: request i is due at t0 + i/rate and its latency counts from
    then. ``rate=None``: closed loop, as fast as the server answers. Errors are counted by kind."""
    due_s: list[list[float]] = [[] for _ in range(N_CONN)]
    lat_s: list[list[float]] = [[] for _ in range(N_CONN)]
    errors = [0] * N_CONN
    error_kinds: list[str] = []
    t0 = time.perf_counter() + 0.05
    end = t0 + seconds

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = 0
        while True:
            if rate is None:
                due = time.perf_counter()
            else:
                due = t0 + (i * N_CONN + k) / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if due >= end:
                break
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors[k] += 1
                    error_kinds.append(f"HTTP {resp.status}")
            except (OSError, http.client.HTTPException) as exc:
                errors[k] += 1
                error_kinds.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            lat_s[k].append(time.perf_counter() - due)
            due_s[k].append(due - t0)
            i += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,), name=f"load-{k}") for k in range(N_CONN)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(time.perf_counter(), end) - t0
    lat = np.array([x for xs in lat_s for x in xs]) * 1000
    due = np.array([x for xs in due_s for x in xs])
    per_minute = []
    for m in range(int(np.ceil(seconds / 60))):
        sel = lat[(due >= 60 * m) & (due < 60 * (m + 1))]
        if sel.size:
            per_minute.append(
                {
                    "minute": m + 1,
                    "requests": int(sel.size),
                    "p50_ms": float(np.percentile(sel, 50)),
                    "p99_ms": float(np.percentile(sel, 99)),
                    "max_ms": float(sel.max()),
                }
            )
    pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: float("nan"))
    return {
        "requests": int(lat.size),
        "expected_requests": None if rate is None else int(np.ceil(seconds * rate)),
        "requests_per_s": lat.size / wall,
        "errors": sum(errors),
        "error_kinds": sorted(set(error_kinds)),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "max_ms": float(lat.max()) if lat.size else float("nan"),
        "over_100ms": int((lat > 100).sum()),
        "per_minute": per_minute,
    }


def learning_phase(
    port: int, seconds: float, body: bytes, rate: float | None, loaded: bool
) -> dict[str, Any]:
    before = scrape(port)
    t = time.perf_counter()
    row: dict[str, Any] = load(port, body, rate, seconds) if loaded else (time.sleep(seconds) or {})
    after = scrape(port)
    dt = time.perf_counter() - t
    row["learn_examples_per_s"] = (
        after["streamlearn_examples_learned_total"] - before["streamlearn_examples_learned_total"]
    ) / dt
    row["lag_at_end"] = after["streamlearn_consumer_lag_messages"]
    return row


@contextmanager
def learning_daemon(learner: str, messages: list[dict[str, Any]], name: str) -> Iterator[tuple[int, Any]]:
    """An embedded broker holding ``messages``, and ``streamlearn run`` learning them in its own
    process (learner + prediction-server process, as deployed): yields (its port, the process)
    once the first example is learned; the process is stopped on exit."""
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        create_topic(broker.bootstrap_servers, name)
        print(f"producing {len(messages)} examples ...", file=sys.stderr, flush=True)
        produce(messages, broker.bootstrap_servers, name, progress=None)
        port = find_free_port()
        cfg = {
            "kafka": {"bootstrap_servers": broker.bootstrap_servers, "topic": name, "group_id": name},
            "learner": {"name": learner},
            "checkpoint": {"dir": str(Path(tmp) / "ckpt")},
            "serve": {"port": port},
            "runtime": {"log_every_seconds": 5},
        }
        (Path(tmp) / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "streamlearn.cli", "--log-level", "WARNING", "run", "-c"]
        daemon = subprocess.Popen([*cmd, str(Path(tmp) / "cfg.yaml")])
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if scrape(port)["streamlearn_examples_learned_total"] > 0:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            yield port, daemon
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learner", default="mer")
    # MER's speed depends on the data (sparse first-layer updates), so short phases over different
    # tasks differ by ±20% without any load; 8 s phases average that out.
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    ap.add_argument("--rates", default="100,200,500", help="open-loop request rates; 'max' is always added")
    ap.add_argument("--tasks", type=int, default=20, help="rotated-mnist-10k tasks to prefill (1000 each)")
    ap.add_argument(
        "--repeat", type=int, default=2, help="send the stream N times (learning outlasts the phases)"
    )
    ap.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")
    args = ap.parse_args()
    rates: list[float | None] = [float(r) for r in args.rates.split(",") if r] + [None]

    messages = list(stream_messages("rotated-mnist-10k", args.tasks)) * args.repeat
    body = json.dumps({"x": messages[0]["x"]}).encode()
    with learning_daemon(args.learner, messages, "load") as (port, _daemon):
        learning: list[dict[str, Any]] = []
        print(f"learning ({args.learner}) under load, {args.seconds:.0f} s per phase ...", file=sys.stderr)
        baseline = [learning_phase(port, args.seconds, body, None, loaded=False)]
        for rate in rates:
            row = learning_phase(port, args.seconds, body, rate, loaded=True)
            baseline.append(learning_phase(port, args.seconds, body, None, loaded=False))
            ref = statistics.mean(b["learn_examples_per_s"] for b in baseline[-2:])
            row.update(rate="max" if rate is None else rate, baseline_examples_per_s=ref)
            row["learning_slowdown"] = 1 - row["learn_examples_per_s"] / ref
            learning.append(row)
            print(f"  {row['rate']}: {json.dumps(row)}", file=sys.stderr, flush=True)
        never_dry = all(b["lag_at_end"] > 0 for b in baseline)
        # idle learner: wait for the topic to drain, then the same load again
        print("waiting for the learner to drain the topic ...", file=sys.stderr, flush=True)
        while scrape(port)["streamlearn_consumer_lag_messages"] > 0:
            time.sleep(1)
        idle = []
        for rate in rates:
            row = load(port, body, rate, args.seconds)
            row["rate"] = "max" if rate is None else rate
            idle.append(row)

    print(f"\nlearner {args.learner}; POST /predict, one 784-float row, {N_CONN} keep-alive connections")
    print(
        f"{'load':>6} | {'learning: rps':>13} {'p50 ms':>7} {'p99 ms':>7} {'err':>4} {'learn ex/s':>10} "
        f"{'no-load ex/s':>12} {'slowdown':>8} | {'idle: rps':>9} {'p50 ms':>7} {'p99 ms':>7} {'err':>4}"
    )
    for lr, ir in zip(learning, idle, strict=True):
        loaded = f"{lr['requests_per_s']:13.0f} {lr['p50_ms']:7.2f} {lr['p99_ms']:7.2f} {lr['errors']:4d}"
        speed = (
            f"{lr['learn_examples_per_s']:10.0f} {lr['baseline_examples_per_s']:12.0f} "
            f"{lr['learning_slowdown']:8.1%}"
        )
        quiet = f"{ir['requests_per_s']:9.0f} {ir['p50_ms']:7.2f} {ir['p99_ms']:7.2f} {ir['errors']:4d}"
        print(f"{lr['rate']!s:>6} | {loaded} {speed} | {quiet}")
    if not never_dry:
        print("note: the topic ran dry during a no-load phase; raise --tasks for a fair baseline")
    if args.json:
        print(
            json.dumps(
                {"learner": args.learner, "learning": learning, "idle": idle, "topic_never_dry": never_dry}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

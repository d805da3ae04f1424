"""Failover of a fleet of learners: kill -9 the active again and again under a steady producer.

    python benchmarks/failover.py [--failovers 10] [--rate 100] [--lease-seconds 10] [--json]

Two ``streamlearn run`` processes share one config (``fleet.enabled``, checkpoints in
``s3://`` on moto_server, the embedded tansu broker; all loopback). Each round kills the active
with SIGKILL, times the takeover (kill → the first example learned by the new active, from its
progress lines every 0.25 s) and restarts the killed one, which comes back as a standby. After
the last round the producer stops, the active learns to the end of the stream and stops by itself
(``runtime.max_examples``); then an uninterrupted single learner learns the same stream and the
two final models are compared. Also reported: replica staleness (model version the active has −
the version served, sampled twice a second) of a ``streamlearn serve --checkpoint-dir s3://…``
replica process that runs through all the rounds (default ``--poll-seconds``) and of the standby
of the moment, and checkpoint save/restore time
of the default MER model on S3 vs local (``benchmarks/checkpoint_store.py``'s interleaved rounds,
measured first, before the fleet starts). Bounded by
``--max-seconds``: rounds stop when it is spent. Targets: takeover p50 ≤ 15 s, 0 lost, 0 learned
twice, max |Δθ| = 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import yaml
from checkpoint_store import checkpoint_ratios, full_mer_state, s3_bucket  # benchmarks/ is sys.path[0]
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import EmbeddedBroker, create_topic
from streamlearn.produce import produce, stream_messages


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Member:
    """One ``streamlearn run`` (or another verb); each log line kept with the monotonic time it arrived."""

    def __init__(self, config: Path, name: str, verb: tuple[str, ...] = ("run",)) -> None:
        env = dict(os.environ, STREAMLEARN_LOG_LEVEL="INFO")
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlearn.cli", *verb, "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line))
                self.cond.notify_all()

    def find(
        self, pattern: str, start: int = 0, timeout_s: float = 120.0
    ) -> tuple[int, float, re.Match[str]]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        i = start
        with self.cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i][1])
                    if m:
                        return i, self.lines[i][0], m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and i >= len(self.lines)):
                    tail = "".join(line for _, line in self.lines[-20:])
                    raise SystemExit(f"{self.name}: {pattern!r} not seen:\n{tail}")
                self.cond.wait(min(left, 1.0))

    def port(self, pattern: str, start: int = 0) -> int:
        return int(self.find(pattern, start)[2][1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def metric(port: int, name: str) -> float | None:
    try:
        with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                return float(s.value)
    return None


ACTIVE = r"fleet: active learner .* epoch (\d+)$"
ACTIVE_PORT = r"(?<!standby )serving on http://[^ ]+:(\d+) \(POST"
STANDBY_PORT = r"standby serving on http://[^ ]+:(\d+) "
REPLICA_PORT = r"read-only replica serving \S+ on http://[^ ]+:(\d+) "


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--failovers", type=int, default=10)
    p.add_argument("--rate", type=float, default=100.0, help="examples/s the producer sends")
    p.add_argument(
        "--lease-seconds", type=float, default=8.0, help="fleet.lease_seconds (default: the default)"
    )
    p.add_argument("--max-seconds", type=float, default=540.0, help="no new round after this")
    p.add_argument("--checkpoint-rounds", type=int, default=21, help="interleaved local/s3 checkpoint rounds")
    p.add_argument("--json", action="store_true", help="last stdout line is one JSON object")
    args = p.parse_args()
    t_start = time.monotonic()
    per_round = args.lease_seconds * 1.5 + 15  # takeover + restart of the killed one + some learning
    n = int(args.rate * (per_round * args.failovers + 30))
    with (
        tempfile.TemporaryDirectory(prefix="failover-") as tmp,
        EmbeddedBroker(log_dir=Path(tmp)) as broker,
        s3_bucket(Path(tmp), "fleet"),
    ):
        # the storage comparison first, while nothing else of this run is started or winding down
        checkpoint_mer = mer_checkpoint_ratios(Path(tmp), args.checkpoint_rounds)
        result = run(args, broker.bootstrap_servers, Path(tmp), n, t_start)
        result["checkpoint_mer"] = checkpoint_mer
    result["wall_s"] = time.monotonic() - t_start
    report(result)
    if args.json:
        print(json.dumps(result))
    return 0


def mer_checkpoint_ratios(tmp: Path, rounds: int) -> dict[str, Any]:
    """Save/restore of the full default MER checkpoint, local vs s3 (moto): ``checkpoint_store``'s."""
    state, _ = full_mer_state(str(tmp / "mer-local"))
    stores = {"local": CheckpointStore(tmp / "mer-local"), "s3_moto": CheckpointStore("s3://fleet/mer")}
    return checkpoint_ratios(stores, state, rounds)


def run(args: argparse.Namespace, bootstrap: str, tmp: Path, n: int, t_start: float) -> dict[str, Any]:
    messages = list(itertools.islice(itertools.cycle(stream_messages("rotated-mnist-10k", n_tasks=2)), n))
    topic = f"failover-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=1, exist_ok=False)
    create_topic(bootstrap, f"{topic}.dlq")
    cfg: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "dead_letter_topic": f"{topic}.dlq",
            "group_id": f"g-{topic}",
            "poll_timeout_ms": 100,
        },
        "learner": {"name": "er", "alignment_every": 0},
        "checkpoint": {"dir": "s3://fleet/model", "every_examples": 200, "every_seconds": 2},
        "runtime": {"log_every_seconds": 0.25, "max_examples": n},
        "serve": {"port": 0},
        "fleet": {"enabled": True, "lease_seconds": args.lease_seconds},
    }
    config = tmp / "fleet.yaml"
    config.write_text(yaml.safe_dump(cfg))
    sent: list[int] = []
    producer = threading.Thread(
        target=lambda: sent.append(produce(messages, bootstrap, topic, rate=args.rate, progress=None)),
        daemon=True,
    )
    producer.start()
    say(f"producing {n} examples at {args.rate:.0f}/s; {args.failovers} kill -9 failovers")
    active = Member(config, "m0")
    active.find(ACTIVE)
    active_port = active.port(ACTIVE_PORT)
    standby = Member(config, "m1")
    standby.find(r"fleet: standby")
    standby_port = standby.port(STANDBY_PORT)
    replica = Member(config, "replica", ("serve", "--checkpoint-dir", "s3://fleet/model"))
    staleness: dict[str, list[float]] = {"standby": [], "replica": []}
    stop_sampling = threading.Event()
    ports = {"active": active_port, "standby": standby_port, "replica": replica.port(REPLICA_PORT)}

    def sample() -> None:
        while not stop_sampling.wait(0.5):
            learner = metric(ports["active"], "streamlearn_model_version")
            for who, behind in staleness.items():
                served = metric(ports[who], "streamlearn_serving_model_version")
                if learner is not None and served is not None and served >= 0:
                    behind.append(learner - served)

    threading.Thread(target=sample, daemon=True).start()
    takeovers: list[float] = []
    acquired: list[float] = []  # kill -> the standby holds the lease
    for k in range(args.failovers):
        if time.monotonic() - t_start > args.max_seconds:
            say(f"time budget spent after {k} failovers")
            break
        mark = len(active.lines)
        active.find(r"checkpoint \(periodic\) ckpt-", start=mark)  # it learned something this round
        start = len(standby.lines)
        killed = time.monotonic()
        active.kill()
        i, t_lease, _ = standby.find(ACTIVE, start=start)
        acquired.append(t_lease - killed)
        j, _, m = standby.find(r"restored \S+: (\d+) examples learned", start=i)
        restored = int(m[1])
        while True:  # the first progress line with more learned than restored
            j, t, m = standby.find(r"learned (\d+) \(", start=j + 1)
            if int(m[1]) > restored:
                break
        takeovers.append(t - killed)
        say(f"failover {k + 1}: takeover {t - killed:.1f} s (restored at {restored} examples)")
        ports["standby"] = -1
        new_standby = Member(config, f"m{k + 2}")
        active, standby = standby, new_standby
        ports["active"] = active.port(ACTIVE_PORT, start=i)
        ports["standby"] = standby.port(STANDBY_PORT)
        standby.find(r"fleet: standby")
    producer.join(timeout=3600)
    say("producer done; the active learns to the end")
    code = active.proc.wait(timeout=600)
    stop_sampling.set()
    standby.kill()
    replica.proc.terminate()  # SIGTERM: the replica stops cleanly
    replica.proc.wait(timeout=30)
    final = CheckpointStore("s3://fleet/model").latest()
    assert final is not None
    state = final[1]
    straight = json.loads(json.dumps(cfg))
    straight.pop("fleet")
    straight["checkpoint"]["dir"] = str(tmp / "straight")
    straight["kafka"]["group_id"] += "-straight"
    straight["runtime"]["log_every_seconds"] = 10.0
    say("the uninterrupted reference run")
    Daemon(load_config_dict(straight, "reference")).run()
    ref = CheckpointStore(tmp / "straight").latest()
    assert ref is not None
    delta = max(
        float((v - state["learner"]["model"][name]).abs().max())
        for name, v in ref[1]["learner"]["model"].items()
    )
    learned = int(state["learner"]["examples"])
    offset = int(state["offsets"][f"{topic}:0"])
    return {
        "failovers": len(takeovers),
        "lease_seconds": args.lease_seconds,
        "takeover_s": {
            "p50": statistics.median(takeovers) if takeovers else None,
            "max": max(takeovers, default=None),
            "all": [round(t, 2) for t in takeovers],
        },
        "lease_acquired_s": {
            "p50": statistics.median(acquired) if acquired else None,
            "max": max(acquired, default=None),
        },
        "produced": sent[0] if sent else None,
        "learned": learned,
        "lost": offset - learned if offset >= learned else 0,
        "learned_twice": learned - offset if learned > offset else 0,
        "final_offset": offset,
        "last_active_exit_code": code,
        "max_abs_delta_theta": delta,
        **{
            f"{who}_staleness_versions": {
                "p50": percentile(xs, 0.5),
                "p99": percentile(xs, 0.99),
                "samples": len(xs),
            }
            for who, xs in staleness.items()
        },
    }


def report(r: dict[str, Any]) -> None:
    t = r["takeover_s"]
    print(f"failovers: {r['failovers']} kill -9 (lease {r['lease_seconds']:.0f} s)")
    if t["p50"] is not None:
        print(
            "takeover (kill -> first example learned by the new active): "
            f"p50 {t['p50']:.1f} s, max {t['max']:.1f} s"
        )
        a = r["lease_acquired_s"]
        print(f"  of which kill -> lease acquired: p50 {a['p50']:.1f} s, max {a['max']:.1f} s")
    print(
        f"produced {r['produced']}, learned {r['learned']} (final offset {r['final_offset']}): "
        f"lost {r['lost']}, learned twice {r['learned_twice']}"
    )
    print(f"max |delta theta| vs the uninterrupted run: {r['max_abs_delta_theta']:.3g}")
    for who, what in (("replica", "`streamlearn serve` replica on s3://"), ("standby", "standby")):
        s = r[f"{who}_staleness_versions"]
        print(
            f"{what} staleness (model versions behind the active): p50 {s['p50']:.0f}, "
            f"p99 {s['p99']:.0f} ({s['samples']} samples)"
        )
    c = r["checkpoint_mer"]
    for what in ("save", "restore"):
        here, there = 1000 * c["local"][f"{what}_s"], 1000 * c["s3_moto"][f"{what}_s"]
        print(
            f"MER checkpoint {what}: local {here:.1f} ms, s3 (moto) {there:.1f} ms, "
            f"ratio {c[f'{what}_ratio']:.2f}x (median of {c['rounds']} interleaved rounds)"
        )
    ok = (
        t["p50"] is not None
        and t["p50"] <= 15
        and r["lost"] == 0
        and r["learned_twice"] == 0
        and r["max_abs_delta_theta"] == 0
        and r["learned"] == r["produced"]
    )
    print(f"targets (takeover p50 <= 15 s, 0 lost, 0 twice, |dtheta| = 0): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    raise SystemExit(main())

"""Chaos soak: kill -9 the daemon at random moments while a producer writes; the model must not notice.

What it measures. An embedded broker (tansu) holds one single-partition topic. A producer thread sends
the first N examples of rotated-mnist-10k at a fixed rate while `python -m streamlearn.cli run` learns
them (CPU, fixed seed, one partition, a checkpoint every 200 examples / 1 s, serving on a free port).
--kills times, at seeded random moments spread over the production window, the daemon gets SIGKILL
and is restarted at once with the same config and checkpoint directory (about one kill in seven lands
during start-up, before it consumes; the others while it learns, so some land before, after or inside
a checkpoint write or between a durable checkpoint and the offset commit). After the last kill it runs
until it has learned N examples (runtime.max_examples = N) and exits. Then an uninterrupted reference
run learns the same messages from a fresh topic into a fresh checkpoint directory.

Checked and reported: produced == the topic's contents (the producer did not duplicate), learned ==
checkpointed offset == committed offset == N, dead letters == 0, final model parameters (and the
whole learner state: replay buffer, optimiser, counters; and the prequential metric state)
bit-identical to the reference (max |Δθ|, torch.equal per tensor), no orphaned prediction servers
(the server must die with the daemon through PR_SET_PDEATHSIG; every child carries a marker in its
environment, found through /proc/*/environ).
Also: restarts that restored a checkpoint, kills that left a half-written checkpoint file, kills
between a durable checkpoint and its offset commit, checkpoints written, wall time, and the ADWIN
drift counts of both runs (not checked: ADWIN's window is not checkpointed, so detections after a
restart may differ from an uninterrupted run, as evaluation/prequential.py documents).

Progress goes to stderr, a summary table to stdout, and with --json one JSON object as the last line.
Exit code 0 when every check holds, 1 otherwise. Bounded by --timeout (default 600 s); the defaults
(8,000 examples at 150 msg/s, 20 kills) take about 2 minutes on the 2-core machine.

Usage: python benchmarks/chaos_soak.py [--learner mer|er] [--kills 20] [--examples 8000] [--rate 150]
                                       [--seed 0] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from kafka import KafkaConsumer, TopicPartition

from streamlearn.checkpoint import CheckpointStore
from streamlearn.ingest.broker import EmbeddedBroker, create_topic
from streamlearn.produce import encode, produce, stream_messages

STREAM = "rotated-mnist-10k"
MARKER_ENV = "STREAMLEARN_CHAOS_SOAK"
STARTUP_KILL_P = 0.15  # share of kills aimed at start-up (before the daemon consumes)
READY_TIMEOUT_S = 90.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- config and processes ---------------------------------------------------------------------------
def make_config(
    bootstrap: str, topic: str, ckpt_dir: Path, group: str, learner: str, seed: int, n: int
) -> dict[str, Any]:
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "dead_letter_topic": f"{topic}.dlq",
            "group_id": group,
            "poll_timeout_ms": 100,
        },
        "learner": {"name": learner, "seed": seed, "device": "cpu"},
        "checkpoint": {"dir": str(ckpt_dir), "every_examples": 200, "every_seconds": 1.0, "keep": 3},
        "runtime": {"threads": 1, "log_every_seconds": 1.0, "max_examples": n},
        "serve": {"port": 0},
    }


def write_config(cfg: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class Run:
    """One `streamlearn run` process and its log file."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        return "consuming " in self.text()


def start_daemon(config: Path, log_path: Path, marker: str) -> Run:
    env = dict(os.environ, STREAMLEARN_LOG_LEVEL="INFO", **{MARKER_ENV: marker})
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlearn.cli", "run", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return Run(proc, log_path, time.monotonic())


def marked_processes(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``marker``: the daemon and its children."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def wait_gone(marker: str, timeout_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = marked_processes(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


# -- Kafka helpers -----------------------------------------------------------------------------------
def committed(bootstrap: str, group: str, topic: str) -> int | None:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return c.committed(TopicPartition(topic, 0))
    finally:
        c.close()


def topic_matches(bootstrap: str, topic: str, messages: list[bytes], timeout_s: float = 60.0) -> bool:
    """True if the partition holds exactly ``messages``, in order, and nothing else."""
    c = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    i, ok = 0, True
    deadline = time.monotonic() + timeout_s
    try:
        while i < len(messages) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                for rec in recs:
                    ok &= rec.offset == i and i < len(messages) and rec.value == messages[i]
                    i += 1
        c.poll(timeout_ms=300)  # one more fetch: anything past the end shows in the high watermark
        return ok and i == len(messages) and c.highwater(tp) == len(messages)
    finally:
        c.close()


# -- comparison --------------------------------------------------------------------------------------
def final_state(ckpt_dir: Path) -> dict[str, Any]:
    found = CheckpointStore(ckpt_dir).latest()
    if found is None:
        raise SystemExit(f"no checkpoint in {ckpt_dir}")
    return found[1]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, bool, list[str]]:
    """(max |a-b| over all tensors, torch.equal for every tensor, names that differ)."""
    worst, differ = 0.0, []
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b or a[k].shape != b[k].shape:
            differ.append(k)
            worst = math.inf
            continue
        if not torch.equal(a[k], b[k]):
            differ.append(k)
            worst = max(worst, (a[k].double() - b[k].double()).abs().max().item())
    return worst, not differ, differ


def deep_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two nested checkpoint values differ (tensors compared with torch.equal)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
        return [] if same and torch.equal(a, b) else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            p for k in sorted(set(a) | set(b), key=str) for p in deep_diff(a.get(k), b.get(k), f"{path}.{k}")
        ]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [path]
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in deep_diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


# -- the soak ----------------------------------------------------------------------------------------
@dataclass
class Kill:
    n: int
    at_s: float
    aim: str  # "startup" | "running"
    alive_s: float
    ready: bool
    learned_log: int | None  # the last "learned N" progress line of the killed process
    checkpointed: int  # examples in the newest checkpoint after the kill
    ckpt_offset: int | None
    committed: int | None
    torn_write: bool  # a half-written checkpoint temp file of the killed pid remained
    orphans: list[int] = field(default_factory=list)

    @property
    def between_ckpt_and_commit(self) -> bool:
        return self.ckpt_offset is not None and (self.committed or 0) < self.ckpt_offset


LEARNED_RE = re.compile(r"learned (\d+) \(|: (\d+) learned, offsets|: (\d+) examples learned")


def last_learned(text: str) -> int | None:
    """Examples learned at least, from the restore, progress and checkpoint lines of a daemon's log."""
    found = [int(a or b or c) for a, b, c in LEARNED_RE.findall(text)]
    return max(found) if found else None


def shm_segments() -> set[str]:
    """POSIX shared-memory segments of Python's multiprocessing (the model snapshot the server reads)."""
    try:
        return {p.name for p in Path("/dev/shm").glob("psm_*")}
    except OSError:
        return set()


def newest_checkpoint(store: CheckpointStore) -> tuple[int, int | None]:
    found = store.latest()
    if found is None:
        return 0, None
    state = found[1]
    return int(state["learner"]["examples"]), next(iter(state["offsets"].values()), None)


def run_to_end(run: Run, deadline: float, what: str) -> None:
    """Wait for a daemon that runs to runtime.max_examples; exit the benchmark if it fails or hangs."""
    while run.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if run.proc.poll() is None:
        run.proc.kill()
        raise SystemExit(f"timeout waiting for the {what} run")
    if run.proc.returncode != 0:
        raise SystemExit(f"{what} daemon exited with {run.proc.returncode}:\n{run.text()[-3000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learner", default="mer", choices=["mer", "er"])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--examples", type=int, default=8000, help="examples produced (default 8000)")
    ap.add_argument("--rate", type=float, default=150.0, help="producer rate, msg/s (default 150)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the learner and of the kill moments")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    ap.add_argument(
        "--workdir", default=None, help="where configs, logs, checkpoints go (default: a temp dir)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the work dir even when every check passes")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    args = ap.parse_args()

    t_start = time.monotonic()
    deadline = t_start + args.timeout
    work = Path(args.workdir or tempfile.mkdtemp(prefix="chaos-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    rng = random.Random(args.seed)
    marker = uuid.uuid4().hex
    n = args.examples

    log(f"work dir {work}; preparing {n} examples of {STREAM}")
    messages = [encode(m) for m in itertools.islice(stream_messages(STREAM), n)]
    if len(messages) < n:
        raise SystemExit(f"{STREAM} has only {len(messages)} examples")

    shm_before = shm_segments()
    broker = EmbeddedBroker(log_dir=work / "tansu").start()
    bootstrap = broker.bootstrap_servers
    runs: list[Run] = []
    kills: list[Kill] = []
    try:
        # ---- chaos phase -------------------------------------------------------------------------
        topic = f"soak-{uuid.uuid4().hex[:8]}"
        group = f"{topic}-g"
        create_topic(bootstrap, topic, partitions=1, exist_ok=False)
        create_topic(bootstrap, f"{topic}.dlq")
        ckpt_dir = work / "ckpt-chaos"
        store = CheckpointStore(ckpt_dir)
        config = write_config(
            make_config(bootstrap, topic, ckpt_dir, group, args.learner, args.seed, n), work / "chaos.yaml"
        )
        produced: dict[str, Any] = {}

        def producer() -> None:
            t0 = time.monotonic()
            produced["n"] = produce(messages, bootstrap, topic, rate=args.rate, progress=None)
            produced["s"] = time.monotonic() - t0

        prod_thread = threading.Thread(target=producer, name="producer", daemon=True)
        t_chaos = time.monotonic()
        prod_thread.start()
        log(f"producer: {n} messages at {args.rate:.0f} msg/s into {topic} ({n / args.rate:.0f} s)")

        ready_times: list[float] = []
        produce_s = n / args.rate
        finished_early = False
        for i in range(args.kills):
            run = start_daemon(config, work / "logs" / f"chaos-{i:02d}.log", marker)
            runs.append(run)
            ready_est = statistics.median(ready_times) if ready_times else 3.0
            gap = max(1.0, produce_s / args.kills - ready_est)
            aim = "startup" if i > 0 and rng.random() < STARTUP_KILL_P else "running"
            delay = rng.uniform(0.0, ready_est) if aim == "startup" else rng.uniform(0.1, 2 * gap)
            if aim == "running":
                while not run.ready() and run.proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                if run.ready():
                    ready_times.append(time.monotonic() - run.started)
                t_kill = time.monotonic() + delay
            else:
                t_kill = run.started + delay
            while run.proc.poll() is None and time.monotonic() < min(t_kill, deadline):
                time.sleep(0.005)
            if run.proc.poll() is not None:
                if run.proc.returncode == 0:
                    finished_early = True
                    log(f"daemon finished before kill {i + 1}: stream too short for {args.kills} kills")
                    break
                raise SystemExit(f"daemon exited with {run.proc.returncode}:\n{run.text()[-3000:]}")
            if time.monotonic() >= deadline:
                raise SystemExit("timeout during the chaos phase")
            alive = time.monotonic() - run.started
            ready = run.ready()
            os.kill(run.proc.pid, signal.SIGKILL)
            run.proc.wait(timeout=30)
            at = time.monotonic() - t_chaos
            orphans = wait_gone(marker)
            torn = any(ckpt_dir.glob(f".ckpt-*.{run.proc.pid}.tmp"))
            examples, ckpt_off = newest_checkpoint(store)
            k = Kill(
                n=i + 1,
                at_s=at,
                aim=aim,
                alive_s=alive,
                ready=ready,
                learned_log=last_learned(run.text()),
                checkpointed=examples,
                ckpt_offset=ckpt_off,
                committed=committed(bootstrap, group, topic),
                torn_write=torn,
                orphans=orphans,
            )
            kills.append(k)
            log(
                f"kill {k.n:2d} at {at:6.1f} s ({aim}, alive {alive:4.1f} s, "
                f"{'ready' if ready else 'starting'}): learned >= {k.learned_log or 0}, "
                f"checkpointed {examples}, committed {k.committed}"
                + (", torn checkpoint write" if torn else "")
                + (", between checkpoint and commit" if k.between_ckpt_and_commit else "")
                + (f", ORPHANS {orphans}" if orphans else "")
            )

        if not finished_early:
            run = start_daemon(config, work / "logs" / "chaos-final.log", marker)
            runs.append(run)
            log("last restart: running to the end")
            run_to_end(run, deadline, "final")
        prod_thread.join(timeout=max(1.0, deadline - time.monotonic()))
        chaos_s = time.monotonic() - t_chaos
        log(f"chaos phase done in {chaos_s:.1f} s; producer took {produced.get('s', float('nan')):.1f} s")
        topic_ok = topic_matches(bootstrap, topic, messages)
        chaos_committed = committed(bootstrap, group, topic)

        # ---- reference run -----------------------------------------------------------------------
        ref_topic = f"{topic}-ref"
        create_topic(bootstrap, ref_topic, partitions=1, exist_ok=False)
        create_topic(bootstrap, f"{ref_topic}.dlq")
        ref_dir = work / "ckpt-reference"
        ref_config = write_config(
            make_config(bootstrap, ref_topic, ref_dir, f"{ref_topic}-g", args.learner, args.seed, n),
            work / "reference.yaml",
        )
        t_ref = time.monotonic()
        ref_produced = produce(messages, bootstrap, ref_topic, progress=None)
        log(f"reference: {ref_produced} messages in {ref_topic}; uninterrupted run")
        ref = start_daemon(ref_config, work / "logs" / "reference.log", marker)
        runs.append(ref)
        run_to_end(ref, deadline, "reference")
        ref_s = time.monotonic() - t_ref
        ref_topic_ok = topic_matches(bootstrap, ref_topic, messages)
        orphans_end = wait_gone(marker)
        time.sleep(1.0)  # the resource tracker of a killed daemon unlinks its segment after it notices
        shm_left = sorted(shm_segments() - shm_before)
    finally:
        for r in runs:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait(timeout=30)
        broker.stop()

    # ---- compare -----------------------------------------------------------------------------------
    chaos_state, ref_state = final_state(ckpt_dir), final_state(ref_dir)
    worst, identical, differ = max_abs_diff(chaos_state["learner"]["model"], ref_state["learner"]["model"])
    learner_diff = deep_diff(chaos_state["learner"], ref_state["learner"], "learner")
    # ADWIN's window is not checkpointed (river cannot export it; see evaluation/prequential.py): after
    # a restore it is re-fed only the last `window` outcomes, so its drift count may differ. Reported only.
    metrics_diff = [
        p
        for p in deep_diff(chaos_state["metrics"]["state"], ref_state["metrics"]["state"], "metrics")
        if p != "metrics.drifts"
    ]
    drifts = (int(chaos_state["metrics"]["state"]["drifts"]), int(ref_state["metrics"]["state"]["drifts"]))
    learned = int(chaos_state["learner"]["examples"])
    offset = chaos_state["offsets"].get(f"{topic}:0")
    rejected = sum(chaos_state["counters"]["rejected"].values())
    texts = [r.text() for r in runs[:-1]]  # the chaos runs
    restored = sum(t.count("restored ckpt-") for t in texts)
    ckpts_written = sum(len(re.findall(r"checkpoint \((?:periodic|stop)\)", t)) for t in texts)
    n_produced = int(produced.get("n", 0))
    checks = {
        "topic holds exactly the produced messages": topic_ok and ref_topic_ok,
        "learned == produced": learned == n_produced == n,
        "checkpoint offset == produced": offset == n_produced,
        "committed offset == produced": chaos_committed == n_produced,
        "dead letters == 0": rejected == 0,
        "model bit-identical to the reference": identical,
        "whole learner state identical": not learner_diff,
        "prequential metric state identical (but ADWIN)": not metrics_diff,
        "no orphaned processes": not orphans_end and not any(k.orphans for k in kills),
    }
    ok = all(checks.values())
    wall = time.monotonic() - t_start
    acc = (chaos_state["metrics"]["summary"]["accuracy"], ref_state["metrics"]["summary"]["accuracy"])
    rows = [
        ("learner", args.learner),
        ("examples produced", f"{n_produced} at {args.rate:.0f} msg/s ({produced.get('s', 0):.1f} s)"),
        ("kills (SIGKILL)", f"{len(kills)} of {args.kills} planned"),
        (
            "  aimed at start-up / while running",
            f"{sum(k.aim == 'startup' for k in kills)} / {sum(k.aim == 'running' for k in kills)}",
        ),
        ("  killed before consuming", str(sum(not k.ready for k in kills))),
        ("  left a torn checkpoint write", str(sum(k.torn_write for k in kills))),
        ("  between checkpoint and commit", str(sum(k.between_ckpt_and_commit for k in kills))),
        ("daemon starts / checkpoint restored", f"{len(runs) - 1} / {restored}"),
        ("checkpoints written (chaos runs)", str(ckpts_written)),
        ("learned (final checkpoint)", str(learned)),
        ("checkpoint offset / committed", f"{offset} / {chaos_committed}"),
        ("dead letters", str(rejected)),
        ("model identical (torch.equal, all)", f"{identical} ({len(differ)} tensors differ)"),
        ("max |Δθ|", f"{worst:.3g}"),
        ("learner state / metric state (but ADWIN) identical", f"{not learner_diff} / {not metrics_diff}"),
        ("prequential accuracy chaos / reference", f"{acc[0]:.4f} / {acc[1]:.4f}"),
        ("ADWIN drifts chaos / reference (info)", f"{drifts[0]} / {drifts[1]}"),
        ("orphans after kills / at end", f"{sum(len(k.orphans) for k in kills)} / {len(orphans_end)}"),
        ("new /dev/shm segments left (info)", str(len(shm_left))),
        ("chaos phase / reference run / total wall", f"{chaos_s:.1f} s / {ref_s:.1f} s / {wall:.1f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"chaos soak: {'PASS' if ok else 'FAIL'}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for name, good in checks.items():
        if not good:
            print(f"  FAILED: {name}")
    if learner_diff:
        print(f"  learner state differs at: {', '.join(learner_diff[:12])}")
    if metrics_diff:
        print(f"  metric state differs at: {', '.join(metrics_diff[:12])}")
    if ok and not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"  work dir (logs, checkpoints): {work}")
    if args.json:
        print(
            json.dumps(
                {
                    "learner": args.learner,
                    "kills": len(kills),
                    "produced": n_produced,
                    "learned": learned,
                    "offset": offset,
                    "committed": chaos_committed,
                    "identical": identical,
                    "learner_state_identical": not learner_diff,
                    "max_abs_diff": worst,
                    "restored": restored,
                    "killed_before_consuming": sum(not k.ready for k in kills),
                    "torn_checkpoint_writes": sum(k.torn_write for k in kills),
                    "between_checkpoint_and_commit": sum(k.between_ckpt_and_commit for k in kills),
                    "checkpoints_written": ckpts_written,
                    "dead_letters": rejected,
                    "adwin_drifts": list(drifts),
                    "orphans": sum(len(k.orphans) for k in kills) + len(orphans_end),
                    "wall_s": round(wall, 1),
                    "ok": ok,
                }
            ),
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

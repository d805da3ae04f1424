"""Daemon end-to-end throughput vs the learner alone, on the same examples.

For each learner: produce the first N examples of rotated-mnist-10k into an embedded broker (before
timing), run the daemon on them (decode + validate + predict + learn + checkpoints, through
Kafka), and compare its examples/s with `streamlearn bench` (predict + learn, no Kafka) on the
same tasks. Also measures the decoder alone. Learners run one after another: on 2 cores, two at
once would each run at half speed.

Usage: python benchmarks/daemon_throughput.py [--learners mer,lamaml,cmaml,er,sgd] [--tasks 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time

from streamlearn.bench import run_bench
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import EmbeddedBroker, create_topic
from streamlearn.ingest.decode import Decoder
from streamlearn.ingest.labels import LabelMap, TaskMap
from streamlearn.produce import encode, produce, stream_messages
from streamlearn.runtime import pin_threads
from streamlearn.streams import load_stream


def decode_cost(n: int = 2000) -> float:
    msgs = [encode(m) for m, _ in zip(stream_messages("rotated-mnist-10k", 1), range(n), strict=False)]
    dec = Decoder(784, LabelMap(10), TaskMap())
    t0 = time.perf_counter()
    for m in msgs:
        dec.decode(m)
    return (time.perf_counter() - t0) / len(msgs) * 1e6


ALIGNMENT_EVERY = 50  # the daemon's default; the bench side gets the same so both do equal work


def daemon_rate(learner: str, broker: EmbeddedBroker, n_tasks: int) -> dict:
    topic = f"bench-{learner}-{time.time_ns()}"
    create_topic(broker.bootstrap_servers, topic)
    create_topic(broker.bootstrap_servers, topic + ".dlq")
    n = produce(stream_messages("rotated-mnist-10k", n_tasks), broker.bootstrap_servers, topic, progress=None)
    with tempfile.TemporaryDirectory() as ckpt:
        cfg = load_config_dict(
            {
                "kafka": {
                    "bootstrap_servers": broker.bootstrap_servers,
                    "topic": topic,
                    "dead_letter_topic": topic + ".dlq",
                    "group_id": topic,
                },
                "learner": {"name": learner, "alignment_every": ALIGNMENT_EVERY},
                "checkpoint": {"dir": ckpt},
                "runtime": {"max_examples": n, "log_every_seconds": 5},
                "serve": {"port": 0},  # serving on, as in production
            },
            "benchmark",
        )
        summary = Daemon(cfg).run()
    assert summary["learned"] == n, summary
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learners", default="mer,lamaml,cmaml,er,sgd")
    ap.add_argument("--tasks", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs per side (runs vary ~15%% here)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pin_threads(1)
    rows = []
    us = decode_cost()
    print(
        f"decode + validate: {us:.1f} µs per 784-float message ({1e6 / us:.0f} messages/s on one core)",
        flush=True,
    )
    stream = load_stream("rotated-mnist-10k", n_tasks=args.tasks)
    with EmbeddedBroker() as broker:
        for learner in args.learners.split(","):
            benches, daemons = [], []
            for _ in range(args.repeats):  # interleaved, so drifting machine load hits both sides
                benches.append(
                    run_bench(learner, stream, seed=0, hparams={"alignment_every": ALIGNMENT_EVERY})
                )
                daemons.append(daemon_rate(learner, broker, args.tasks))
            b = max(benches, key=lambda r: r.examples_per_s)
            d = max(daemons, key=lambda r: r["examples_per_s"])
            row = {
                "learner": learner,
                "examples": b.examples,
                "bench_examples_per_s": round(b.examples_per_s, 1),
                "daemon_examples_per_s": round(d["examples_per_s"], 1),
                "ratio": round(d["examples_per_s"] / b.examples_per_s, 3),
                "daemon_prequential_accuracy": round(d["prequential_accuracy"], 4),
                "bench_prequential_accuracy": round(b.prequential_accuracy, 4),
            }
            rows.append(row)
            print(
                f"{learner:7} bench {row['bench_examples_per_s']:8.1f} ex/s   "
                f"daemon {row['daemon_examples_per_s']:8.1f} ex/s   ratio {row['ratio']:.2f}   "
                f"prequential acc bench {row['bench_prequential_accuracy']:.4f} "
                f"daemon {row['daemon_prequential_accuracy']:.4f}",
                flush=True,
            )
    if args.json:
        print(json.dumps({"decode_us": us, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

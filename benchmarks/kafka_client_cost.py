"""What fetching from Kafka costs the learner's thread, per record, for each Kafka client at hand.

The daemon learns on one thread and takes its examples from a Kafka client on that same thread; the
client's own threads (kafka-python's IO thread, librdkafka's broker threads) run beside it. A client
costs the learner twice: the Python work it does on the learner's thread (kafka-python decodes each
record batch there, in Python, when ``poll`` drains it) and the GIL its IO thread takes back and forth
while the learner runs (kafka-python reads a fetch answer in 4 KB ``recv`` calls and parses it in
Python; librdkafka fetches and parses in C, without the GIL).

This measures both at once, the way the daemon meets them: SGD (the fastest learner, the one whose
daemon/learner ratio in ``daemon_throughput.py`` is furthest from 1) learns the first N examples of
rotated-mnist-10k test-then-train from memory, and before each 100 examples it takes 100 records from
the client, as the daemon's loop does. The records' bytes are not decoded (decoding is the same
whatever the client). The same loop without a client is the baseline; the difference is what the
client costs the learner's thread per record. Rounds alternate the variants; medians are reported.

Clients: ``kafka-python`` through :class:`streamlearn.ingest.source.KafkaSource` exactly as the
daemon uses it (explicit assignment, drain what is buffered, the pipelining poll), and
``confluent-kafka`` (librdkafka) when it is installed — it is not a dependency of streamlearn; this
benchmark is the measurement behind the question of changing the client (``pip install
confluent-kafka`` to include it). The broker is the embedded tansu, on loopback.

Usage: python benchmarks/kafka_client_cost.py [--tasks 10] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from streamlearn.config import load_config_dict
from streamlearn.ingest.broker import EmbeddedBroker, create_topic
from streamlearn.ingest.source import KafkaSource
from streamlearn.learners import make_learner, mlp
from streamlearn.produce import produce, stream_messages
from streamlearn.runtime import pin_threads
from streamlearn.streams import load_stream

BATCH = 100  # records taken before each 100 examples: kafka.max_poll_records' default

#: a client: (bootstrap servers, topic) -> (take up to BATCH records' values, close)
Client = Callable[[str, str], tuple[Callable[[], list[bytes]], Callable[[], None]]]


def kafka_python(bootstrap: str, topic: str) -> tuple[Callable[[], list[bytes]], Callable[[], None]]:
    cfg = load_config_dict(
        {"kafka": {"bootstrap_servers": bootstrap, "topic": topic, "group_id": f"cost-{time.time_ns()}"}},
        "benchmark",
    )
    source = KafkaSource(cfg.kafka, bootstrap)
    source.assign()
    source.seek({}, group_commit=False)
    return (lambda: [rec.value for _, rec in source.poll(1000)]), source.close


def confluent_kafka(bootstrap: str, topic: str) -> tuple[Callable[[], list[bytes]], Callable[[], None]]:
    from confluent_kafka import Consumer, TopicPartition  # optional: not a streamlearn dependency

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"cost-{time.time_ns()}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])

    def take() -> list[bytes]:
        out = []
        for m in consumer.consume(num_messages=BATCH, timeout=1.0):
            if m.error() is None:
                out.append(m.value())
        return out

    return take, consumer.close


def clients() -> dict[str, Client | None]:
    found: dict[str, Client | None] = {"kafka-python": kafka_python}
    try:
        import confluent_kafka as _  # noqa: F401
    except ImportError:
        found["confluent-kafka"] = None
    else:
        found["confluent-kafka"] = confluent_kafka
    return found


def learn_loop(xs: torch.Tensor, ys: torch.Tensor, take: Callable[[], list[bytes]] | None) -> float:
    """SGD test-then-train over the examples, taking BATCH records before every BATCH examples;
    examples/s. With ``take``, every record must arrive (the topic holds one per example)."""
    learner = make_learner("sgd", mlp(784, 10, (100, 100)), n_classes=10, alignment_every=50)
    got = 0
    gc.freeze()
    try:
        t0 = time.perf_counter()
        for i in range(len(xs)):
            if take is not None and i % BATCH == 0:
                want = min(BATCH, len(xs) - got)
                while want > 0:
                    values = take()
                    got += len(values)
                    want -= len(values)
            xb, yb = xs[i : i + 1], ys[i : i + 1]
            learner.predict_proba(xb)
            learner.learn(xb, yb, task=0)
        seconds = time.perf_counter() - t0
    finally:
        gc.unfreeze()
    return len(xs) / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10, help="tasks of rotated-mnist-10k (1,000 examples each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    pin_threads(1)
    stream = load_stream("rotated-mnist-10k", n_tasks=args.tasks)
    xs = torch.from_numpy(np.concatenate([t.train_x for t in stream.tasks]))
    ys = torch.from_numpy(np.concatenate([t.train_y for t in stream.tasks]))
    found = clients()
    for name, client in found.items():
        if client is None:
            print(f"{name}: not installed, left out (pip install {name} to include it)")
    variants = ["no client", *(name for name, client in found.items() if client is not None)]
    print(f"load average {os.getloadavg()[0]:.2f} at start; {len(xs)} examples, {args.repeats} rounds")
    rates: dict[str, list[float]] = {v: [] for v in variants}
    with EmbeddedBroker() as broker:
        topic = f"cost-{time.time_ns()}"
        create_topic(broker.bootstrap_servers, topic)
        messages = stream_messages("rotated-mnist-10k", args.tasks)
        produce(messages, broker.bootstrap_servers, topic, progress=None)
        for r in range(args.repeats):
            for v in variants if r % 2 == 0 else variants[::-1]:
                client = found.get(v)
                if client is None:
                    rates[v].append(learn_loop(xs, ys, None))
                    continue
                take, close = client(broker.bootstrap_servers, topic)
                try:
                    take_first = take()  # connect and join before the clock starts, then start over
                    assert take_first, f"{v}: no record arrived"
                finally:
                    close()
                take, close = client(broker.bootstrap_servers, topic)
                try:
                    rates[v].append(learn_loop(xs, ys, take))
                finally:
                    close()
            line = "   ".join(f"{v} {rates[v][-1]:.0f} ex/s" for v in variants)
            print(f"round {r + 1}: {line}", flush=True)
    base = statistics.median(rates["no client"])
    rows: list[dict[str, Any]] = []
    print(f"\nmedians of {args.repeats} rounds (load average {os.getloadavg()[0]:.2f} at the end):")
    print(f"{'variant':15} {'ex/s':>8} {'vs no client':>13} {'µs per record':>14}")
    for v in variants:
        rate = statistics.median(rates[v])
        cost = (1 / rate - 1 / base) * 1e6
        rows.append(
            {
                "variant": v,
                "examples_per_s": round(rate, 1),
                "ratio": round(rate / base, 3),
                "us_per_record": round(cost, 1),
                "runs": [round(x, 1) for x in rates[v]],
            }
        )
        print(f"{v:15} {rate:8.0f} {rate / base:13.3f} {cost:14.1f}")
    if args.json:
        print(json.dumps({"examples": len(xs), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

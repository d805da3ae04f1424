"""Daemon end-to-end throughput vs the learner alone, on the same examples, per learner and path.

For each learner and path (``fast_path`` numpy or compiled; ``reference`` for learners without a
lean path): produce the first N examples of rotated-mnist-10k into an embedded broker (before
timing), run the daemon on them (fetch + decode + validate + predict + learn + metrics +
checkpoints + serving, through Kafka), and compare its examples/s with `streamlearn bench` (predict
+ learn, no Kafka; the same garbage-collector setting as the daemon) on the same tasks. The
daemon's rate is its steady state, from the first learned batch to the last (start-up and the stop
checkpoint are not examples/s). Each round runs every pair back to back (the side that goes first
alternates), so a machine shared with other work slows both sides of a pair alike; the ratio
reported is the median of the pairs' ratios. Learners run one after another: on 2 cores, two at
once would each run at half speed. The first compiled run of each learner (numba compiles or loads
its cache) is a warm-up, not timed.

``--breakdown`` then runs the daemon once more per learner and path with a clock around each step
and prints where an example's time goes (µs, exclusive: a step's time leaves out the steps it
calls; the clock's own ~1 µs a call is measured and left out). Those runs are not the ones rated.
Parsing done ahead on the worker thread (``ingest/parse_ahead.py``) runs beside the loop and is not
counted; what the loop still parses itself is.

Usage: python benchmarks/daemon_throughput.py [--learners mer,lamaml,cmaml,er,sgd]
                                               [--path numpy,compiled] [--tasks 3] [--repeats 3]
                                               [--breakdown] [--set kafka.KEY=VALUE] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import inspect
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import yaml

from streamlearn.bench import run_bench
from streamlearn.config import load_config_dict
from streamlearn.consume import TestThenTrain
from streamlearn.daemon import Daemon
from streamlearn.evaluation.prequential import PrequentialMetrics
from streamlearn.guard.guardrails import Guardrails
from streamlearn.guard.hooks import GuardHooks
from streamlearn.ingest.broker import EmbeddedBroker, create_topic
from streamlearn.ingest.decode import Decoder
from streamlearn.ingest.labels import LabelMap, TaskMap
from streamlearn.ingest.source import KafkaSource
from streamlearn.ingest.source_librdkafka import LibrdkafkaSource
from streamlearn.learners import LEARNERS, Learner
from streamlearn.produce import encode, produce, stream_messages
from streamlearn.runtime import pin_threads
from streamlearn.streams import TaskStream, load_stream

ALIGNMENT_EVERY = 50  # the daemon's default; the bench side gets the same so both do equal work


def decode_cost(n: int = 2000) -> float:
    msgs = [encode(m) for m, _ in zip(stream_messages("rotated-mnist-10k", 1), range(n), strict=False)]
    dec = Decoder(784, LabelMap(10), TaskMap())
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for m in msgs:
            dec.decode(m)
        best = min(best, (time.perf_counter() - t0) / len(msgs) * 1e6)
    return best


def paths_of(learner: str, wanted: list[str]) -> list[str]:
    """The wanted paths a learner has; "reference" alone for a learner without a lean path."""
    has_lean = "fast_path" in inspect.signature(LEARNERS[learner].__init__).parameters
    return wanted if has_lean else ["reference"]


def hparams_of(path: str) -> dict[str, Any]:
    hp: dict[str, Any] = {"alignment_every": ALIGNMENT_EVERY}
    if path != "reference":
        hp["fast_path"] = path
    return hp


#: daemon config overrides from --set section.key=value (e.g. kafka.max_poll_records=500)
OVERRIDES: dict[str, dict[str, Any]] = {}


def daemon_run(learner: str, path: str, broker: EmbeddedBroker, n_tasks: int) -> dict[str, Any]:
    """One daemon over a fresh topic holding the stream's first ``n_tasks`` tasks; its rates."""
    topic = f"bench-{learner}-{time.time_ns()}"
    create_topic(broker.bootstrap_servers, topic)
    create_topic(broker.bootstrap_servers, topic + ".dlq")
    n = produce(stream_messages("rotated-mnist-10k", n_tasks), broker.bootstrap_servers, topic, progress=None)
    with tempfile.TemporaryDirectory() as ckpt:
        raw: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": broker.bootstrap_servers,
                "topic": topic,
                "dead_letter_topic": topic + ".dlq",
                "group_id": topic,
            },
            "learner": {
                "name": learner,
                "alignment_every": ALIGNMENT_EVERY,
                "hparams": {k: v for k, v in hparams_of(path).items() if k != "alignment_every"},
            },
            "checkpoint": {"dir": ckpt},
            "runtime": {"max_examples": n, "log_every_seconds": 5},
            "serve": {"port": 0},  # serving on, as in production
        }
        for section, values in OVERRIDES.items():
            raw.setdefault(section, {}).update(values)
        cfg = load_config_dict(raw, "benchmark")
        daemon = Daemon(cfg)
        summary = daemon.run()
    assert summary["learned"] == n, summary
    first, last = daemon.step.first_learn, daemon.step.last_learn
    assert first is not None and last is not None
    return {
        "examples_per_s": (last[1] - first[1]) / (last[0] - first[0]),
        "with_stop_examples_per_s": summary["examples_per_s"],
        "prequential_accuracy": summary["prequential_accuracy"],
        "window": (first, last),
    }


def bench_run(learner: str, path: str, stream: TaskStream) -> dict[str, Any]:
    # The daemon keeps its start-up objects out of the garbage collector's scans while it learns;
    # the learner alone gets the same, so the ratio is the daemon's own work and nothing else.
    gc.freeze()
    try:
        r = run_bench(learner, stream, seed=0, hparams=hparams_of(path))
    finally:
        gc.unfreeze()
    return {"examples_per_s": r.examples_per_s, "prequential_accuracy": r.prequential_accuracy}


# -- the breakdown ------------------------------------------------------------------------------

#: step name -> the functions whose exclusive time it sums; "learner" steps are what bench also does
STEPS: dict[str, list[tuple[Any, str]]] = {
    "learn (learner)": [(Learner, "learn")],
    "predict (learner)": [(Learner, "predict_proba")],
    # librdkafka's drain runs in poll, or in peek when the drained records run short
    "fetch: source poll": [
        (KafkaSource, "poll"),
        (LibrdkafkaSource, "poll"),
        (KafkaSource, "peek"),
        (LibrdkafkaSource, "peek"),
    ],
    "decode + validate": [(Decoder, "parse"), (Decoder, "finish")],
    "consume loop (per message)": [(TestThenTrain, "consume")],
    "batch to tensors": [(TestThenTrain, "learn_pending"), (TestThenTrain, "_learn_batch")],
    "prequential metrics": [
        (TestThenTrain, "_record_scored"),
        (PrequentialMetrics, "add_runs"),
        (PrequentialMetrics, "_flush"),
    ],
    "update metrics + publish": [(TestThenTrain, "_observe_update")],
    "guard hooks": [(GuardHooks, "learned"), (Guardrails, "champion_predict")],
    "checkpoints": [(Daemon, "_checkpoint")],
    "periodic: gauges, serving, log": [
        (Daemon, name)
        for name in (
            "_refresh_gauges",
            "_supervise_server",
            "_republish_model",
            "_publish_metrics_text",
            "_report",
            "_answer_checkpoint_request",
        )
    ],
}


class StepClock:
    """Exclusive time per step: each wrapped call's time minus that of the wrapped calls inside it.

    Keeps (monotonic start, step, exclusive seconds) per call, so a window can be cut out later.
    The clock's own cost around a call (measured at start) is charged to the call, not its caller.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, float]] = []
        self._inner = [0.0]  # time of wrapped calls inside the current one, per nesting level
        self._saved: list[tuple[Any, str, Any]] = []
        self.overhead = 0.0
        self.overhead = statistics.median(self._calibrate() for _ in range(5))

    def _calibrate(self, n: int = 20_000) -> float:
        """Seconds a wrapped call adds to its caller beyond the time the wrapper measures."""
        child = self._timed("child", lambda: None)

        def parent() -> None:
            for _ in range(n):
                child()

        plain = time.perf_counter()
        for _ in range(n):
            (lambda: None)()
        plain = time.perf_counter() - plain
        self._timed("parent", parent)()
        parent_s = next(seconds for _, step, seconds in self.calls if step == "parent")
        self.calls.clear()
        return max(0.0, (parent_s - plain) / n)

    def _timed(self, step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = self

        main = threading.main_thread().ident

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != main:  # the parse-ahead worker: in parallel, not the loop's time
                return fn(*args, **kwargs)
            clock._inner.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - t0
                inner = clock._inner.pop()
                clock._inner[-1] += spent + clock.overhead
                clock.calls.append((time.monotonic() - spent, step, spent - inner))

        return wrapper

    def _timed_iter(self, step: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        """A generator's time is that of each ``next`` (kafka-python's poll runs in the first)."""
        timed_next = self._timed(step, next)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            it = fn(*args, **kwargs)
            while True:
                try:
                    item = timed_next(it)
                except StopIteration:
                    return
                yield item

        return wrapper

    def install(self) -> None:
        for step, targets in STEPS.items():
            for owner, name in targets:
                fn = owner.__dict__[name]
                self._saved.append((owner, name, fn))
                wrap = self._timed_iter if inspect.isgeneratorfunction(fn) else self._timed
                setattr(owner, name, wrap(step, fn))

    def uninstall(self) -> None:
        for owner, name, fn in reversed(self._saved):
            setattr(owner, name, fn)
        self._saved.clear()

    def per_example_us(self, window: tuple[tuple[float, int], tuple[float, int]]) -> dict[str, float]:
        (t0, n0), (t1, n1) = window
        spent: Counter[str] = Counter()
        for start, step, seconds in self.calls:
            if t0 - 1e-3 <= start <= t1:  # first_learn is stamped just after the first batch began
                spent[step] += seconds
        n = n1 - n0
        out = {step: spent[step] / n * 1e6 for step in STEPS}
        out["rest of the loop"] = max(0.0, (t1 - t0) / n * 1e6 - sum(out.values()))
        return out


def breakdown(learner: str, path: str, broker: EmbeddedBroker, n_tasks: int) -> dict[str, float]:
    clock = StepClock()
    clock.install()
    try:
        run = daemon_run(learner, path, broker, n_tasks)
    finally:
        clock.uninstall()
    return clock.per_example_us(run["window"])


# -- main ---------------------------------------------------------------------------------------


def warm_up(learner: str, path: str, stream: TaskStream) -> float:
    """Compile (or load numba's cache) before anything is timed; seconds it took."""
    t0 = time.perf_counter()
    run_bench(learner, dataclasses.replace(stream, tasks=stream.tasks[:1]), seed=0, hparams=hparams_of(path))
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learners", default="mer,lamaml,cmaml,er,sgd")
    ap.add_argument("--path", default="numpy,compiled", help="fast paths to run (numpy, compiled)")
    ap.add_argument("--tasks", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="rounds; the median pair ratio is reported")
    ap.add_argument("--breakdown", action="store_true", help="also time each step of the daemon")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a daemon config key (YAML value), e.g. kafka.max_poll_records=500; repeatable",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        OVERRIDES.setdefault(section, {})[name] = yaml.safe_load(value)
    logging.basicConfig(level=logging.ERROR)
    pin_threads(1)
    wanted = args.path.split(",")
    pairs = [(name, path) for name in args.learners.split(",") for path in paths_of(name, wanted)]
    us = decode_cost()
    print(f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    print(f"decode + validate alone: {us:.1f} µs per 784-float message ({1e6 / us:.0f}/s on one core)")
    stream = load_stream("rotated-mnist-10k", n_tasks=args.tasks)
    for name, path in pairs:
        if path == "compiled":
            print(f"{name:7} compiled: warm-up {warm_up(name, path, stream):.1f} s (not timed)", flush=True)
    runs: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = {p: [] for p in pairs}
    breakdowns: dict[tuple[str, str], dict[str, float]] = {}
    with EmbeddedBroker() as broker:
        for r in range(args.repeats):
            for name, path in pairs:
                if r % 2 == 0:
                    b = bench_run(name, path, stream)
                    d = daemon_run(name, path, broker, args.tasks)
                else:
                    d = daemon_run(name, path, broker, args.tasks)
                    b = bench_run(name, path, stream)
                runs[name, path].append((b, d))
                print(
                    f"round {r + 1}: {name:7} {path:9} learner {b['examples_per_s']:7.1f} ex/s   "
                    f"daemon {d['examples_per_s']:7.1f} ex/s   ratio "
                    f"{d['examples_per_s'] / b['examples_per_s']:.3f}   (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
        if args.breakdown:
            for name, path in pairs:
                breakdowns[name, path] = breakdown(name, path, broker, args.tasks)
    rows = []
    for (name, path), pair_runs in runs.items():
        ratios = [d["examples_per_s"] / b["examples_per_s"] for b, d in pair_runs]
        rows.append(
            {
                "learner": name,
                "path": path,
                "examples": stream_size(stream),
                "learner_examples_per_s": round(
                    statistics.median(b["examples_per_s"] for b, _ in pair_runs), 1
                ),
                "daemon_examples_per_s": round(
                    statistics.median(d["examples_per_s"] for _, d in pair_runs), 1
                ),
                "ratio": round(statistics.median(ratios), 3),
                "ratio_min": round(min(ratios), 3),
                "ratio_max": round(max(ratios), 3),
                "daemon_with_stop_examples_per_s": round(
                    statistics.median(d["with_stop_examples_per_s"] for _, d in pair_runs), 1
                ),
                "learner_prequential_accuracy": round(pair_runs[0][0]["prequential_accuracy"], 4),
                "daemon_prequential_accuracy": round(pair_runs[0][1]["prequential_accuracy"], 4),
                "breakdown_us": {k: round(v, 1) for k, v in breakdowns.get((name, path), {}).items()},
                "breakdown_learner_share": learner_share(breakdowns.get((name, path))),
            }
        )
    print(f"\nmedians of {args.repeats} rounds, {rows[0]['examples']} examples ({args.tasks} tasks) per run:")
    print(f"{'learner':7} {'path':9} {'learner ex/s':>12} {'daemon ex/s':>12} {'ratio':>6} {'(min-max)':>12}")
    for row in rows:
        print(
            f"{row['learner']:7} {row['path']:9} {row['learner_examples_per_s']:12.1f} "
            f"{row['daemon_examples_per_s']:12.1f} {row['ratio']:6.3f} "
            f"({row['ratio_min']:.2f}-{row['ratio_max']:.2f})   prequential acc learner "
            f"{row['learner_prequential_accuracy']:.4f} daemon {row['daemon_prequential_accuracy']:.4f}"
        )
    if breakdowns:
        print_breakdown(rows)
    print(f"load average {os.getloadavg()[0]:.2f} at the end", flush=True)
    if args.json:
        print(json.dumps({"decode_us": round(us, 1), "load_average": os.getloadavg()[0], "rows": rows}))
    return 0


def learner_share(steps: dict[str, float] | None) -> float | None:
    """(predict + learn) / all the daemon's time an example, from a breakdown."""
    if not steps:
        return None
    return round(sum(v for k, v in steps.items() if k.endswith("(learner)")) / sum(steps.values()), 3)


def stream_size(stream: TaskStream) -> int:
    return sum(len(task.train_y) for task in stream.tasks)


def print_breakdown(rows: list[dict[str, Any]]) -> None:
    print("\nwhere an example's time goes in the daemon (µs, exclusive; one extra run each, clock on):")
    cols = [r for r in rows if r["breakdown_us"]]
    print(f"{'':32}" + "".join(f"{r['learner'] + '/' + r['path'][:5]:>14}" for r in cols))
    for step in [*STEPS, "rest of the loop"]:
        print(f"{step:32}" + "".join(f"{r['breakdown_us'][step]:14.1f}" for r in cols))
    learner_side = [k for k in STEPS if k.endswith("(learner)")]
    total = [sum(r["breakdown_us"].values()) for r in cols]
    overhead = [t - sum(r["breakdown_us"][k] for k in learner_side) for r, t in zip(cols, total, strict=True)]
    print(f"{'total':32}" + "".join(f"{t:14.1f}" for t in total))
    print(f"{'daemon beyond predict + learn':32}" + "".join(f"{o:14.1f}" for o in overhead))
    # The share of the daemon's time that is the learner's own work: the ratio these steps imply,
    # steadier than the rated pairs on a busy machine (both sides of it come from one run).
    print(
        f"{'learner share (implied ratio)':32}"
        + "".join(f"{1 - o / t:14.3f}" for o, t in zip(overhead, total, strict=True))
    )


if __name__ == "__main__":
    sys.exit(main())

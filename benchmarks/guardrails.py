"""Guardrails benchmark: the promotion gate and rollback (streamlearn.guard) off vs on, one process.

Learner level, no Kafka: the same ``ModelState`` (learner + ``Guardrails``) and ``Quarantine`` the
daemon drives, fed rotated-mnist-10k one micro-batch at a time (test-then-train), with a list for
the quarantine topic. The *served* model (the learner with the gate off, the champion with it on)
is scored on the current task's held-out eval images every ``--eval-every`` examples; the golden
set is the other part of each task's held-out images (disjoint from those eval images).

Scenarios (sizes by flags; the issue's full sizes are ``--bug-start 8000 --bug-len 1500
--after 1000 --tasks 10``):

- (a) producer bug: ``--bug-len`` examples from ``--bug-start`` get labels +1 mod 10;
- (b) genuine drift: task 0 then task 1 (a new rotation); served accuracy ``--drift-at`` examples
  into task 1;
- (c) divergence: a burst of ``--burst`` examples with features × 1e6 mid-task;
- cost: learning examples/s (predict + champion predict + learn + gate) on vs off, from (b).

    python benchmarks/guardrails.py --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from streamlearn.bench import accuracy
from streamlearn.config import Config
from streamlearn.config.schema import GuardConfig
from streamlearn.guard.golden import GoldenSet
from streamlearn.guard.quarantine import Quarantine
from streamlearn.learners import Learner
from streamlearn.metrics import LearnerMetrics
from streamlearn.model_state import ModelState
from streamlearn.runtime import pin_threads
from streamlearn.streams import load_stream


class ListSink:
    """The quarantine topic, as a list of source offsets."""

    def __init__(self) -> None:
        self.offsets: list[int] = []

    def send(
        self, value: bytes | None, *, reason: str, detail: str, topic: str, partition: int, offset: int
    ) -> None:
        self.offsets.append(offset)

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


@dataclass
class Run:
    """One pass over a stream with the gate off or on."""

    served: list[tuple[int, float]] = field(default_factory=list)  # (examples read, served accuracy)
    quarantined: list[int] = field(default_factory=list)
    dead_lettered: list[tuple[int, str]] = field(default_factory=list)
    learn_s: float = 0.0
    learned: int = 0
    promotions: int = 0
    rollbacks: int = 0
    finite: bool = True

    def at(self, i: int) -> float:
        """Served accuracy at the last measurement at or before example ``i``."""
        return [a for n, a in self.served if n <= i][-1]

    def low(self, start: int, end: int) -> float:
        return min(a for n, a in self.served if start <= n <= end)


def _config(args: argparse.Namespace, gate: bool) -> Config:
    cfg = Config()
    cfg.learner.name = args.learner
    cfg.learner.seed = args.seed
    cfg.guard = GuardConfig(
        gate=gate,
        promote_every=args.promote_every,
        margin=args.margin,
        golden_margin=args.golden_margin,
        rollback_after=args.rollback_after,
    )
    return cfg


def run(
    args: argparse.Namespace,
    gate: bool,
    x: np.ndarray,
    y: np.ndarray,
    task: np.ndarray,
    evals: list[tuple[np.ndarray, np.ndarray]],
    golden: GoldenSet,
) -> Run:
    state = ModelState(_config(args, gate), LearnerMetrics(CollectorRegistry()))
    learner, guard = state.learner, state.guard
    guard.golden = golden
    sink = ListSink()
    quarantine = Quarantine(sink)
    out = Run()
    bs = learner.default_batch_size
    for start in range(0, len(y), bs):
        end = min(start + bs, len(y))
        if task[start] != task[end - 1]:
            end = start + int(np.flatnonzero(task[start:end] != task[start])[0])
        xb, yb, t = torch.from_numpy(x[start:end]), torch.from_numpy(y[start:end]), int(task[start])
        t0 = time.perf_counter()
        probs = learner.predict_proba(xb)
        champion_probs = guard.champion_predict(xb)
        stats = learner.learn(xb, yb, task=t)
        if stats.undone is not None:
            out.dead_lettered += [(i, "non_finite_update") for i in range(start, end)]
            if guard.undone(end - start).action == "rollback" and quarantine.roll_back(guard, "stalled"):
                out.rollbacks += 1
        else:
            sources = [("examples", 0, i, b"") for i in range(start, end)]
            verdict = guard.learned(probs, champion_probs, yb, t, sources)
            out.promotions += verdict.action == "promote"
            if verdict.action == "rollback" and quarantine.roll_back(guard, "benchmark"):
                out.rollbacks += 1
        out.learn_s += time.perf_counter() - t0
        out.learned += end - start
        if end // args.eval_every != start // args.eval_every or end == len(y):
            served: Learner = guard.champion if guard.champion is not None else learner
            ex, ey = evals[t]
            out.served.append((end, accuracy(served, ex, ey)))
            out.finite = out.finite and all(torch.isfinite(p).all() for p in served.model.parameters())
    out.quarantined = sink.offsets
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--learner", default="mer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", type=int, default=2, help="tasks of rotated-mnist-10k for (a)")
    p.add_argument("--bug-start", type=int, default=400)
    p.add_argument("--bug-len", type=int, default=300)
    p.add_argument("--after", type=int, default=300, help="examples after the bug to recover in")
    p.add_argument("--drift-at", type=int, default=500)
    p.add_argument("--burst", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--golden-per-task", type=int, default=300)
    p.add_argument("--promote-every", type=int, default=25)
    p.add_argument("--rollback-after", type=int, default=25)
    p.add_argument("--margin", type=float, default=0.02)
    p.add_argument("--golden-margin", type=float, default=0.03)
    args = p.parse_args(argv)
    pin_threads(1)  # torch and BLAS: more threads only slow these tiny products (DESIGN.md §9)
    t_start = time.monotonic()

    stream = load_stream("rotated-mnist-10k", n_tasks=max(args.tasks, 2))
    tasks = stream.tasks
    n_eval = args.eval_images
    evals = [(t.eval_x[:n_eval], t.eval_y[:n_eval]) for t in tasks]
    g = args.golden_per_task
    golden = GoldenSet(
        torch.from_numpy(np.concatenate([t.eval_x[n_eval : n_eval + g] for t in tasks])),
        torch.from_numpy(np.concatenate([t.eval_y[n_eval : n_eval + g] for t in tasks])).long(),
        np.concatenate([np.full(len(t.eval_y[n_eval : n_eval + g]), i) for i, t in enumerate(tasks)]),
    )
    xs = np.concatenate([t.train_x for t in tasks[: args.tasks]])
    ys = np.concatenate([t.train_y for t in tasks[: args.tasks]]).astype(np.int64)
    ts = np.concatenate([np.full(len(t.train_y), i) for i, t in enumerate(tasks[: args.tasks])])
    results: dict[str, Any] = {"learner": args.learner, "args": vars(args)}

    # (a) producer bug: labels +1 mod 10, then clean again
    b0, b1 = args.bug_start, args.bug_start + args.bug_len
    n_a = min(b1 + args.after, len(ys))
    ya = ys[:n_a].copy()
    ya[b0:b1] = (ya[b0:b1] + 1) % 10
    a = {m: run(args, m == "on", xs[:n_a], ya, ts[:n_a], evals, golden) for m in ("off", "on")}
    pre = a["off"].at(b0)
    bad = set(range(b0, b1))
    q = a["on"].quarantined
    results["a_producer_bug"] = {
        "examples": n_a,
        "pre_bug_accuracy": {m: a[m].at(b0) for m in a},
        "lowest_served_accuracy": {m: a[m].low(b0, n_a) for m in a},
        "max_drop_points": {m: 100 * (a[m].at(b0) - a[m].low(b0, n_a)) for m in a},
        "after_accuracy": {m: a[m].at(n_a) for m in a},
        "recovery_gap_points": {m: 100 * (a[m].at(b0) - a[m].at(n_a)) for m in a},
        "quarantined": len(q),
        "bad_quarantined_fraction": len(bad & set(q)) / len(bad),
        "good_in_quarantine_fraction": (len([i for i in q if i not in bad]) / len(q)) if q else 0.0,
        "rollbacks": a["on"].rollbacks,
        "promotions": a["on"].promotions,
    }
    del pre

    # (b) genuine drift: a new rotation at example 1000; cost from the same runs
    n_b = min(len(tasks[0].train_y) + args.drift_at, len(ys))
    bruns = {m: run(args, m == "on", xs[:n_b], ys[:n_b], ts[:n_b], evals, golden) for m in ("off", "on")}
    rates = {m: bruns[m].learned / bruns[m].learn_s for m in bruns}
    results["b_drift"] = {
        "served_accuracy_on_new_task": {m: bruns[m].at(n_b) for m in bruns},
        "gap_points": 100 * (bruns["off"].at(n_b) - bruns["on"].at(n_b)),
    }
    results["cost"] = {"examples_per_s": rates, "on_over_off": rates["on"] / rates["off"]}

    # (c) divergence: features x 1e6, a burst mid-task
    n_c = min(len(tasks[0].train_y), len(ys))
    xc = xs[:n_c].copy()
    c0 = n_c // 2
    xc[c0 : c0 + args.burst] *= 1e6
    c = {m: run(args, m == "on", xc, ys[:n_c], ts[:n_c], evals, golden) for m in ("off", "on")}
    results["c_divergence"] = {
        m: {
            "finite": c[m].finite,
            "dead_lettered": len(c[m].dead_lettered),
            "reasons": sorted({r for _, r in c[m].dead_lettered}),
            "accuracy_before_burst": c[m].at(c0),
            "lowest_after_burst": c[m].low(c0, n_c),
            "accuracy_end": c[m].at(n_c),
            "rollbacks": c[m].rollbacks,
            "quarantined": len(c[m].quarantined),
        }
        for m in c
    }
    results["wall_s"] = time.monotonic() - t_start
    if args.json:
        json.dump(results, sys.stdout, indent=2, default=float)
        print()
    else:
        for k, v in results.items():
            print(f"{k}: {v}")
    ok = all(math.isfinite(r) for r in rates.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

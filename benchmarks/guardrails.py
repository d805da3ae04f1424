"""Guardrails benchmark: the promotion gate and rollback (streamlearn.guard) off vs on, one process.

Learner level, no Kafka: the same ``ModelState`` (learner + ``Guardrails``) and ``Quarantine`` the
daemon drives, fed rotated-mnist-10k one micro-batch at a time (test-then-train), with a list for
the quarantine topic. The *served* model (the learner with the gate off, the champion with it on)
is scored on the current task's held-out eval images every ``--eval-every`` examples; the golden
set is the other part of each task's held-out images (disjoint from those eval images).

Scenarios (sizes by flags; the defaults are the issue's full sizes, except that the bug starts at
8,500: the stream's tasks are 1,000 examples long, so the issue's 8,000 is a task change, not the
middle of a task; a 1,500-example bug crosses a task change wherever it starts):

- (a) producer bug: ``--bug-len`` examples from ``--bug-start`` get labels +1 mod 10;
- (b) genuine drift: task 0 then task 1 (a new rotation); served accuracy ``--drift-at`` examples
  into task 1;
- (c) divergence mid-task: a burst of ``--burst`` examples with features × 1e6; or a restart
  with ``learner.hparams.lr`` 1e6 in the config (the checkpoint restored, learning goes on);
- cost: learning examples/s (predict + champion predict + learn + gate) on vs off, interleaved
  rounds of ``--cost-round`` examples over the first ``--cost-examples``, median of the ratios.

    python benchmarks/guardrails.py --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
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


def _config(args: argparse.Namespace, gate: bool, **hparams: float) -> Config:
    cfg = Config()
    cfg.learner.name = args.learner
    cfg.learner.seed = args.seed
    cfg.learner.hparams = dict(hparams)
    cfg.guard = GuardConfig(
        gate=gate,
        promote_every=args.promote_every,
        margin=args.margin,
        golden_margin=args.golden_margin,
        rollback_after=args.rollback_after,
    )
    return cfg


class Pass:
    """The daemon's per-batch work on one ``ModelState``: predict, champion predict, learn, gate,
    and dead-letter or quarantine into lists."""

    def __init__(self, args: argparse.Namespace, gate: bool, golden: GoldenSet) -> None:
        self.args, self.gate, self.golden = args, gate, golden
        self._build(_config(args, gate))
        self.out = Run()

    def _build(self, cfg: Config) -> None:
        self.state = ModelState(cfg, LearnerMetrics(CollectorRegistry()))
        self.state.guard.golden = self.golden
        self.sink = ListSink()
        self.quarantine = Quarantine(self.sink)

    def restart(self, **hparams: float) -> None:
        """A restart with a changed config (``learner.hparams``) that restores the last checkpoint."""
        saved = self.state.state_dict({})
        offsets = self.sink.offsets
        self._build(_config(self.args, self.gate, **hparams))
        self.state.load_state_dict(saved)
        self.sink.offsets = offsets

    @property
    def served(self) -> Learner:
        guard = self.state.guard
        return guard.champion if guard.champion is not None else self.state.learner

    def step(self, xb: torch.Tensor, yb: torch.Tensor, t: int, start: int) -> None:
        learner, guard, out = self.state.learner, self.state.guard, self.out
        end = start + len(yb)
        t0 = time.perf_counter()
        probs = learner.predict_proba(xb)
        champion_probs = guard.champion_predict(xb)
        stats = learner.learn(xb, yb, task=t)
        if stats.undone is not None:
            out.dead_lettered += [(i, "non_finite_update") for i in range(start, end)]
            if (
                guard.undone(end - start).action == "rollback"
                and self.quarantine.roll_back(guard, "stalled") is not None
            ):
                out.rollbacks += 1
        else:
            sources = [("examples", 0, i, b"") for i in range(start, end)]
            verdict = guard.learned(probs, champion_probs, yb, t, sources)
            out.promotions += verdict.action == "promote"
            if verdict.action == "rollback" and self.quarantine.roll_back(guard, "benchmark") is not None:
                out.rollbacks += 1
        out.learn_s += time.perf_counter() - t0
        out.learned += end - start


def batches(task: np.ndarray, bs: int) -> list[tuple[int, int]]:
    """(start, end) of each micro-batch, never across a task change."""
    spans, start = [], 0
    while start < len(task):
        end = min(start + bs, len(task))
        if task[start] != task[end - 1]:
            end = start + int(np.flatnonzero(task[start:end] != task[start])[0])
        spans.append((start, end))
        start = end
    return spans


def run(
    args: argparse.Namespace,
    gate: bool,
    x: np.ndarray,
    y: np.ndarray,
    task: np.ndarray,
    evals: list[tuple[np.ndarray, np.ndarray]],
    golden: GoldenSet,
    restart_at: int | None = None,
    **hparams: float,
) -> Run:
    """One pass; at example ``restart_at`` the daemon restarts with ``learner.hparams`` changed."""
    p = Pass(args, gate, golden)
    for start, end in batches(task, p.state.learner.default_batch_size):
        if restart_at is not None and start <= restart_at < end:
            p.restart(**hparams)
        t = int(task[start])
        p.step(torch.from_numpy(x[start:end]), torch.from_numpy(y[start:end]), t, start)
        if end // args.eval_every != start // args.eval_every or end == len(y):
            ex, ey = evals[t]
            p.out.served.append((end, accuracy(p.served, ex, ey)))
            p.out.finite = p.out.finite and all(torch.isfinite(q).all() for q in p.served.model.parameters())
    p.out.quarantined = p.sink.offsets
    return p.out


def cost(
    args: argparse.Namespace, x: np.ndarray, y: np.ndarray, task: np.ndarray, golden: GoldenSet
) -> dict[str, Any]:
    """Learning examples/s, gate off vs on, interleaved: both learn the same stream, a round of
    ``--cost-round`` examples at a time each, the order alternating; the ratio per round, median."""
    passes = {m: Pass(args, m == "on", golden) for m in ("off", "on")}
    spans = batches(task, passes["off"].state.learner.default_batch_size)
    ratios: list[float] = []
    i = 0
    while i < len(spans):
        j = i
        while j < len(spans) and spans[j][1] - spans[i][0] < args.cost_round:
            j += 1
        j = max(j, i + 1)
        order = ("off", "on") if len(ratios) % 2 == 0 else ("on", "off")
        took = {}
        for m in order:
            t0 = passes[m].out.learn_s
            for start, end in spans[i:j]:
                xb, yb = torch.from_numpy(x[start:end]), torch.from_numpy(y[start:end])
                passes[m].step(xb, yb, int(task[start]), start)
            took[m] = passes[m].out.learn_s - t0
        ratios.append(took["off"] / took["on"])
        i = j
    rates = {m: passes[m].out.learned / passes[m].out.learn_s for m in passes}
    return {
        "examples_per_s": rates,
        "on_over_off": float(np.median(ratios)),
        "rounds": len(ratios),
        "on_over_off_quartiles": [float(np.quantile(ratios, q)) for q in (0.25, 0.75)],
        "loadavg": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--learner", default="mer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tasks", type=int, default=11, help="tasks of rotated-mnist-10k (1,000 examples each) for (a)"
    )
    p.add_argument("--bug-start", type=int, default=8500, help="(a): the middle of task 8")
    p.add_argument("--bug-len", type=int, default=1500)
    p.add_argument("--after", type=int, default=1000, help="examples after the bug to recover in")
    p.add_argument("--drift-at", type=int, default=500)
    p.add_argument("--burst", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--golden-per-task", type=int, default=300)
    p.add_argument("--promote-every", type=int, default=25)
    p.add_argument("--rollback-after", type=int, default=25)
    p.add_argument("--margin", type=float, default=0.02)
    p.add_argument("--golden-margin", type=float, default=0.03)
    p.add_argument(
        "--cost-examples", type=int, default=3000, help="examples learned by each side for the cost"
    )
    p.add_argument("--cost-round", type=int, default=100, help="examples per interleaved cost round")
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

    # (a) producer bug: labels +1 mod 10, then clean again; "clean" = gate off, no bug (reference)
    b0, b1 = args.bug_start, args.bug_start + args.bug_len
    n_a = min(b1 + args.after, len(ys))
    ya = ys[:n_a].copy()
    ya[b0:b1] = (ya[b0:b1] + 1) % 10
    a = {m: run(args, m == "on", xs[:n_a], ya, ts[:n_a], evals, golden) for m in ("off", "on")}
    clean = run(args, False, xs[:n_a], ys[:n_a], ts[:n_a], evals, golden)
    bad = set(range(b0, b1))
    q = a["on"].quarantined
    changes = [i for i in range(b0 + 1, b1) if ts[i] != ts[i - 1]]
    results["a_producer_bug"] = {
        "examples": n_a,
        "task_changes_during_bug": changes,
        "pre_bug_accuracy": {m: a[m].at(b0) for m in a},
        "lowest_served_accuracy": {m: a[m].low(b0, n_a) for m in a},
        "max_drop_points": {m: 100 * (a[m].at(b0) - a[m].low(b0, n_a)) for m in a},
        # the part of the bug in the task it started in: the same eval images as before it
        "max_drop_points_same_task": {
            m: 100 * (a[m].at(b0) - a[m].low(b0, (changes or [n_a])[0] - 1)) for m in a
        },
        # against the clean run at the same moment (a new rotation drops any model at first)
        "max_shortfall_vs_clean_points": {
            m: 100 * max(c - a[m].at(i) for i, c in clean.served if b0 <= i <= n_a) for m in a
        },
        "after_accuracy": {m: a[m].at(n_a) for m in a},
        "recovery_gap_points": {m: 100 * (a[m].at(b0) - a[m].at(n_a)) for m in a},
        "clean_after_accuracy": clean.at(n_a),
        "quarantined": len(q),
        "bad_quarantined_fraction": len(bad & set(q)) / len(bad),
        "good_in_quarantine_fraction": (len([i for i in q if i not in bad]) / len(q)) if q else 0.0,
        "rollbacks": a["on"].rollbacks,
        "promotions": a["on"].promotions,
    }

    # (b) genuine drift: a new rotation at example 1000
    n_b = min(len(tasks[0].train_y) + args.drift_at, len(ys))
    bruns = {m: run(args, m == "on", xs[:n_b], ys[:n_b], ts[:n_b], evals, golden) for m in ("off", "on")}
    results["b_drift"] = {
        "served_accuracy_on_new_task": {m: bruns[m].at(n_b) for m in bruns},
        "gap_points": 100 * (bruns["off"].at(n_b) - bruns["on"].at(n_b)),
        "rollbacks_on": bruns["on"].rollbacks,
    }

    # (c) divergence mid-task 0: a burst of features x 1e6; a restart with learner.hparams.lr 1e6
    n_c = min(len(tasks[0].train_y), len(ys))
    c0 = n_c // 2
    xc = xs[:n_c].copy()
    xc[c0 : c0 + args.burst] *= 1e6
    variants = {
        "features_x1e6": lambda gate: run(args, gate, xc, ys[:n_c], ts[:n_c], evals, golden),
        "lr_1e6": lambda gate: run(args, gate, xs[:n_c], ys[:n_c], ts[:n_c], evals, golden, c0, lr=1e6),
    }
    results["c_divergence"] = {}
    for name, go in variants.items():
        c = {m: go(m == "on") for m in ("off", "on")}
        results["c_divergence"][name] = {
            m: {
                "finite": c[m].finite,
                "dead_lettered": len(c[m].dead_lettered),
                "reasons": sorted({r for _, r in c[m].dead_lettered}),
                "accuracy_before": c[m].at(c0),
                "lowest_after": c[m].low(c0, n_c),
                "accuracy_end": c[m].at(n_c),
                "rollbacks": c[m].rollbacks,
                "quarantined": len(c[m].quarantined),
            }
            for m in c
        }

    # cost: learning examples/s, interleaved rounds on the clean stream
    n_cost = min(args.cost_examples, len(ys))
    results["cost"] = cost(args, xs[:n_cost], ys[:n_cost], ts[:n_cost], golden)
    results["wall_s"] = time.monotonic() - t_start
    if args.json:
        json.dump(results, sys.stdout, indent=2, default=float)
        print()
    else:
        for k, v in results.items():
            print(f"{k}: {v}")
    ok = all(math.isfinite(r) for r in results["cost"]["examples_per_s"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

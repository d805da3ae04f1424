"""Compiled against numpy kernels: examples/s of MER, La-MAML and C-MAML, one process, one thread.

The two paths run back to back on the same tasks of rotated-mnist-10k (``bench``'s prequential loop,
``fast_path`` "numpy" then "compiled", the order alternating between repeats), so a machine shared
with other work slows both alike; the spread of the per-pair ratios is the noise. The first compiled
call of each learner (compile, or load from numba's cache) is timed apart and not counted.

    python benchmarks/compiled_speed.py --tasks 2 --repeats 3 [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from streamlearn.bench import run_bench
from streamlearn.learners import make_learner, mlp
from streamlearn.runtime import pin_threads

PATHS = ("numpy", "compiled")


def first_call_s(name: str) -> float:
    """Seconds of the first compiled learn call of a fresh learner (compile or cache load)."""
    learner = make_learner(name, mlp(784, 10, (100, 100)), n_classes=10, fast_path="compiled")
    bs = learner.default_batch_size
    t0 = time.perf_counter()
    learner.learn(torch.rand(bs, 784), torch.zeros(bs, dtype=torch.long))
    return time.perf_counter() - t0


def measure(name: str, tasks: int, repeats: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
    for r in range(repeats):
        for path in PATHS if r % 2 == 0 else PATHS[::-1]:
            res = run_bench(name, n_tasks=tasks, hparams={"fast_path": path})
            runs[path].append(
                {"examples_per_s": res.examples_per_s, "learn_examples_per_s": res.learn_examples_per_s}
            )
    row: dict[str, Any] = {"learner": name, "runs": runs}
    for key in ("examples_per_s", "learn_examples_per_s"):
        ratios = [c[key] / n[key] for n, c in zip(runs["numpy"], runs["compiled"], strict=True)]
        row[key] = {
            "numpy_median": statistics.median(r[key] for r in runs["numpy"]),
            "compiled_median": statistics.median(r[key] for r in runs["compiled"]),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learners", nargs="+", default=["mer", "lamaml", "cmaml"])
    ap.add_argument("--tasks", type=int, default=2, help="tasks per run (1000 examples each)")
    ap.add_argument("--repeats", type=int, default=3, help="numpy/compiled pairs per learner")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()
    pin_threads(1)
    rows = []
    for name in args.learners:
        first = first_call_s(name)
        row = measure(name, args.tasks, args.repeats)
        row["first_compiled_call_s"] = first
        rows.append(row)
        for key in ("examples_per_s", "learn_examples_per_s"):
            m = row[key]
            print(
                f"{name:7s} {key:21s} numpy {m['numpy_median']:7.1f}  compiled {m['compiled_median']:7.1f}  "
                f"x{m['ratio_median']:.2f} (pairs {m['ratio_min']:.2f}-{m['ratio_max']:.2f})",
                flush=True,
            )
        print(f"{name:7s} first compiled call {first:.2f} s", flush=True)
    if args.json:
        print(json.dumps({"tasks": args.tasks, "repeats": args.repeats, "rows": rows}))


if __name__ == "__main__":
    main()

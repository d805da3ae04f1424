"""Compiled against numpy kernels: examples/s and RA of MER, La-MAML and C-MAML, one thread.

The two paths run back to back on the same stream (``bench``'s prequential loop, ``fast_path``
"numpy" then "compiled", the order alternating between repeats), so a machine shared with other
work slows both alike; the spread of the per-pair ratios is the noise. Repeat r uses seed r (model
init, replay draws, shuffles), so the repeats are also the RA comparison over seeds. ``--nudge``
adds a third run per seed: the numpy path with every initial weight moved by 1e-7 (random sign), the
size of the difference that float32 rounding alone makes on this chaotic stream. The first compiled
call of each learner (compile, or load from numba's cache) is timed apart and not counted.

    python benchmarks/compiled_speed.py --repeats 3 --nudge --json          # full stream, seeds 0-2
    python benchmarks/compiled_speed.py --tasks 2 --repeats 1               # a quick look
    python benchmarks/compiled_speed.py --profile --cold-start --learners mer   # no speed runs

``--profile``: where one MER example's time goes on each path (cProfile, µs an example, after the
buffer is full). ``--cold-start``: process start to the first learned example, per path, with
numba's cache warm and with an empty cache directory (NUMBA_CACHE_DIR), i.e. compiling.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch

from streamlearn import bench
from streamlearn.learners import make_learner, mlp
from streamlearn.runtime import pin_threads
from streamlearn.streams import load_stream

PATHS = ("numpy", "compiled")
NUDGE = 1e-7


def first_call_s(name: str) -> float:
    """Seconds of the first compiled learn call of a fresh learner (compile or cache load)."""
    learner = make_learner(name, mlp(784, 10, (100, 100)), n_classes=10, fast_path="compiled")
    bs = learner.default_batch_size
    t0 = time.perf_counter()
    learner.learn(torch.rand(bs, 784), torch.zeros(bs, dtype=torch.long))
    return time.perf_counter() - t0


@contextlib.contextmanager
def nudged_init(seed: int) -> Iterator[None]:
    """``bench`` builds its model with every weight moved by ±1e-7 (signs drawn from ``seed``)."""
    plain = bench.mlp

    def nudged(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = plain(*args, **kwargs)
        g = torch.Generator().manual_seed(1000 + seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(NUDGE * (torch.randint(0, 2, p.shape, generator=g) * 2 - 1))
        return model

    bench.mlp = nudged  # type: ignore[assignment]
    try:
        yield
    finally:
        bench.mlp = plain  # type: ignore[assignment]


def one_run(name: str, variant: str, tasks: int | None, seed: int) -> dict[str, float]:
    path = "numpy" if variant == "nudged" else variant
    with nudged_init(seed) if variant == "nudged" else contextlib.nullcontext():
        res = bench.run_bench(name, n_tasks=tasks, seed=seed, hparams={"fast_path": path})
    return {
        "seed": seed,
        "examples_per_s": res.examples_per_s,
        "learn_examples_per_s": res.learn_examples_per_s,
        "ra": res.ra,
        "load_avg_1m": os.getloadavg()[0],
    }


def measure(name: str, tasks: int | None, repeats: int, nudge: bool) -> dict[str, Any]:
    variants = (*PATHS, "nudged") if nudge else PATHS
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(repeats):
        for variant in variants if r % 2 == 0 else variants[::-1]:
            runs[variant].append(one_run(name, variant, tasks, seed=r))
            print(f"  {name} seed {r} {variant:8s} {runs[variant][-1]}", file=sys.stderr, flush=True)
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
    for variant in variants[1:]:  # RA minus the numpy path's, seed by seed
        diffs = [v["ra"] - n["ra"] for n, v in zip(runs["numpy"], runs[variant], strict=True)]
        row[f"ra_{variant}_minus_numpy"] = {
            "mean": statistics.fmean(diffs),
            "min": min(diffs),
            "max": max(diffs),
            "mean_abs": statistics.fmean(abs(d) for d in diffs),
        }
    row["ra_numpy_mean"] = statistics.fmean(r["ra"] for r in runs["numpy"])
    return row


# -- where one MER example's time goes -----------------------------------------------------------
def _where(filename: str, func: str) -> str:
    if "compiled" in filename:
        return f"numba kernel {func}"
    short = filename.split("site-packages/")[-1].split("streamlearn/")[-1]
    return f"{short}:{func}" if not filename.startswith("~") else func


def profile_mer(n: int = 300) -> dict[str, Any]:
    """µs an example by function (own time), MER with the bench's settings, buffer already full."""
    task = load_stream("rotated-mnist-10k", n_tasks=1).tasks[0]
    xs, ys = torch.from_numpy(task.train_x), torch.from_numpy(task.train_y)
    out: dict[str, Any] = {}
    for path in PATHS:
        learner = make_learner("mer", bench.mlp(784, 10, (100, 100), seed=0), n_classes=10, fast_path=path)
        for i in range(300):  # fills the 200-slot buffer and compiles
            learner.learn(xs[i : i + 1], ys[i : i + 1], task=0)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for i in range(300, 300 + n):
            learner.predict_proba(xs[i : i + 1])
            learner.learn(xs[i : i + 1], ys[i : i + 1], task=0)
        prof.disable()
        wall = time.perf_counter() - t0
        by: dict[str, float] = {}
        for (filename, _line, func), stat in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
            key = _where(filename, func)
            by[key] = by.get(key, 0.0) + stat[2]  # own time
        top = sorted(by.items(), key=lambda kv: -kv[1])[:12]
        out[path] = {
            "us_per_example_profiled": wall / n * 1e6,
            "top_own_time_us": {k: v / n * 1e6 for k, v in top},
        }
        print(f"MER, {path} path: {wall / n * 1e6:.0f} µs an example under cProfile; own time by function:")
        for k, v in top:
            print(f"  {v / n * 1e6:8.1f} µs  {k}")
    return out


# -- cold start ------------------------------------------------------------------------------------
_CHILD = """
from streamlearn.runtime import pin_threads
pin_threads(1)
import torch
from streamlearn.learners import make_learner, mlp
learner = make_learner({name!r}, mlp(784, 10, (100, 100)), n_classes=10, fast_path={path!r})
bs = learner.default_batch_size
learner.learn(torch.rand(bs, 784), torch.zeros(bs, dtype=torch.long))
print("learned", flush=True)
"""


def cold_start_s(name: str, path: str, cache_dir: str | None) -> float:
    """Seconds from launching a Python process to its first learned example."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD.format(name=name, path=path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    elapsed = time.perf_counter() - t0
    assert "learned" in proc.stdout, proc.stderr
    return elapsed


def cold_starts(names: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for name in names:
        with tempfile.TemporaryDirectory() as empty:
            row = {
                "numpy": cold_start_s(name, "numpy", None),
                "compiled_cache_empty": cold_start_s(name, "compiled", empty),
                "compiled_cache_warm": cold_start_s(name, "compiled", empty),  # the run above filled it
            }
        out[name] = row
        print(f"{name:7s} cold start (s): " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learners", nargs="+", default=["mer", "lamaml", "cmaml"])
    ap.add_argument(
        "--tasks", type=int, default=None, help="tasks per run (1000 examples each; default all 20)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="numpy/compiled pairs per learner, seed = repeat")
    ap.add_argument("--nudge", action="store_true", help="also run numpy with initial weights moved by 1e-7")
    ap.add_argument("--profile", action="store_true", help="profile one MER example on each path, then stop")
    ap.add_argument(
        "--cold-start", action="store_true", help="time process start to first example, then stop"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()
    pin_threads(1)
    result: dict[str, Any] = {"load_avg_start": os.getloadavg()}
    if args.profile or args.cold_start:
        if args.profile:
            result["profile_mer"] = profile_mer()
        if args.cold_start:
            result["cold_start_s"] = cold_starts(args.learners)
    else:
        result.update(tasks=args.tasks or 20, repeats=args.repeats, rows=[])
        for name in args.learners:
            first = first_call_s(name)
            row = measure(name, args.tasks, args.repeats, args.nudge)
            row["first_compiled_call_s"] = first
            result["rows"].append(row)
            for key in ("examples_per_s", "learn_examples_per_s"):
                m = row[key]
                print(
                    f"{name:7s} {key:21s} numpy {m['numpy_median']:7.1f} compiled {m['compiled_median']:7.1f}"
                    f"  x{m['ratio_median']:.2f} (pairs {m['ratio_min']:.2f}-{m['ratio_max']:.2f})",
                    flush=True,
                )
            for key in [k for k in row if k.startswith("ra_") and k.endswith("_minus_numpy")]:
                d = row[key]
                print(
                    f"{name:7s} {key:25s} mean {d['mean']:+.4f}  min {d['min']:+.4f}  max {d['max']:+.4f}"
                    f"  (numpy RA mean {row['ra_numpy_mean']:.4f})",
                    flush=True,
                )
            print(f"{name:7s} first compiled call {first:.2f} s", flush=True)
    result["load_avg_end"] = os.getloadavg()
    print(f"load average at start {result['load_avg_start']}, at end {result['load_avg_end']}", flush=True)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()

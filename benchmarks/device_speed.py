"""The device path against the numpy and reference paths: examples/s of MER, La-MAML and C-MAML.

Each round runs ``bench``'s prequential loop (predict, then learn) over the first ``--examples``
examples of each of the first ``--tasks`` tasks of rotated-mnist-10k, once per path, the order
of the paths rotating between rounds, so a machine shared with other work slows them alike; the
ratios are taken within a round and their median reported (with the spread of the rounds).

Paths: ``numpy`` (the default kernel, CPU, MLP only), ``device`` (device_path.py), ``cuda_graph``
(the same captured in CUDA graphs, with ``--device cuda`` only) and ``reference`` (torch.func
transcription), all but numpy on ``--device``. On the CPU the device path is expected to
be *slower* than the numpy kernel for the MLP: it is autograd per step, built for GPUs and larger
models (``--model cnn``, where no kernel applies and the comparison is with the reference path).

    python benchmarks/device_speed.py --examples 300 --rounds 3 [--model cnn] [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from typing import Any

from streamlearn.bench import run_bench
from streamlearn.errors import ConfigError
from streamlearn.learners.base import available_device
from streamlearn.runtime import pin_threads
from streamlearn.streams import TaskStream, load_stream


def truncated(tasks: int, examples: int) -> TaskStream:
    stream = load_stream("rotated-mnist-10k", n_tasks=tasks)
    short = [
        dataclasses.replace(t, train_x=t.train_x[:examples], train_y=t.train_y[:examples])
        for t in stream.tasks[:tasks]
    ]
    return dataclasses.replace(stream, tasks=short)


def paths_for(model: str, device: str) -> list[tuple[str, object, str]]:
    """(label, fast_path, device) of each path measured."""
    out: list[tuple[str, object, str]] = [("numpy", "numpy", "cpu")] if model == "mlp" else []
    graphs = [("cuda_graph", "cuda_graph", device)] if device.startswith("cuda") else []
    return [*out, ("device", "device", device), *graphs, ("reference", False, device)]


def measure(name: str, stream: TaskStream, model: str, device: str, rounds: int) -> dict[str, Any]:
    paths = paths_for(model, device)
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in paths}
    ratios: dict[str, list[float]] = {label: [] for label, _, _ in paths[1:]}
    for r in range(rounds):
        order = paths[r % len(paths) :] + paths[: r % len(paths)]
        this: dict[str, float] = {}
        for label, fast_path, dev in order:
            res = run_bench(name, stream, device=dev, model=model, hparams={"fast_path": fast_path})
            assert res.path == ("device" if label == "cuda_graph" else label), (res.path, label)
            runs[label].append(
                {"examples_per_s": res.examples_per_s, "learn_examples_per_s": res.learn_examples_per_s}
            )
            this[label] = res.learn_examples_per_s
        base = paths[0][0]
        for label in ratios:
            ratios[label].append(this[label] / this[base])
    medians = {label: statistics.median(x["learn_examples_per_s"] for x in runs[label]) for label in runs}
    return {
        "learner": name,
        "baseline": paths[0][0],
        "learn_examples_per_s_median": medians,
        "ratio_to_baseline_median": {k: statistics.median(v) for k, v in ratios.items()},
        "ratio_to_baseline_range": {k: [min(v), max(v)] for k, v in ratios.items()},
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learners", nargs="+", default=["mer", "lamaml", "cmaml"])
    ap.add_argument("--tasks", type=int, default=1, help="tasks per run")
    ap.add_argument("--examples", type=int, default=300, help="training examples of each task (of 1000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each running every path once")
    ap.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--device", default="cpu", help="where the device and reference paths run")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()
    try:
        available_device(args.device)  # a clear error before loading the stream, not after
    except ConfigError as exc:
        raise SystemExit(f"device_speed: {exc}") from None
    pin_threads(1)
    stream = truncated(args.tasks, args.examples)
    rows = []
    for name in args.learners:
        row = measure(name, stream, args.model, args.device, args.rounds)
        rows.append(row)
        rates = "  ".join(f"{k} {v:7.1f}" for k, v in row["learn_examples_per_s_median"].items())
        vs = "  ".join(
            f"{k}/{row['baseline']} x{m:.2f} ({row['ratio_to_baseline_range'][k][0]:.2f}-"
            f"{row['ratio_to_baseline_range'][k][1]:.2f})"
            for k, m in row["ratio_to_baseline_median"].items()
        )
        print(f"{name:7s} learn ex/s: {rates}   {vs}", flush=True)
    if args.json:
        keys = ("tasks", "examples", "rounds", "model", "device")
        print(json.dumps({**{k: getattr(args, k) for k in keys}, "rows": rows}))


if __name__ == "__main__":
    main()

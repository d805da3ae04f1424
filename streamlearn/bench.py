"""The continual-learning benchmark: one learner, one pass over a task stream, test-then-train.

Each micro-batch is predicted by the current model before it is learned (prequential accuracy);
after each task the model is evaluated on every task's held-out set, which gives RA, LA and BTI.
Speed is reported for the prequential loop (predict + learn), the work the daemon does per
example; evaluation on the held-out sets is not counted in it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import numpy as np
import torch

from streamlearn.evaluation import ContinualScores
from streamlearn.learners import LEARNERS, Learner, build_model, make_learner
from streamlearn.streams import TaskStream, load_stream


@dataclass
class BenchResult:
    learner: str
    stream: str
    tasks: int
    seed: int
    device: str
    batch_size: int
    fast_path: bool
    ra: float
    la: float
    bti: float
    prequential_accuracy: float
    examples: int
    examples_per_s: float
    learn_examples_per_s: float
    wall_s: float
    hparams: dict[str, Any] = field(default_factory=dict)
    accuracy_matrix: list[list[float]] = field(default_factory=list)
    model: str = "mlp"
    #: the implementation the learner chose: compiled, numpy, device or reference (``Learner.path``)
    path: str = "reference"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def accuracy(learner: Learner, x: np.ndarray, y: np.ndarray, chunk: int = 4096) -> float:
    correct = 0
    for i in range(0, len(x), chunk):
        probs = learner.predict_proba(torch.from_numpy(x[i : i + chunk]))
        correct += int((probs.argmax(dim=1).cpu().numpy() == y[i : i + chunk]).sum())
    return correct / len(x)


def run_bench(
    learner_name: str,
    stream: TaskStream | str = "rotated-mnist-10k",
    *,
    n_tasks: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int | None = None,
    hidden: tuple[int, ...] = (100, 100),
    model: str = "mlp",
    hparams: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Run ``learner_name`` over ``stream`` once and score it (``model``: "mlp" or "cnn")."""
    if learner_name not in LEARNERS:
        raise ValueError(f"unknown learner {learner_name!r}; expected one of {sorted(LEARNERS)}")
    wall0 = time.perf_counter()
    if isinstance(stream, str):
        stream = load_stream(stream, n_tasks=n_tasks)
    tasks = stream.tasks[:n_tasks] if n_tasks else stream.tasks
    net = build_model(model, stream.n_inputs, stream.n_classes, hidden, seed=seed)
    learner = make_learner(
        learner_name, net, n_classes=stream.n_classes, seed=seed, device=device, **(hparams or {})
    )
    bs = batch_size or learner.default_batch_size
    scores = ContinualScores(len(tasks))
    loop_s = learn_s = 0.0
    seen = correct = 0
    for t, task in enumerate(tasks):
        xs = torch.from_numpy(task.train_x)
        ys = torch.from_numpy(task.train_y)
        if learner.device.type != "cpu":
            xs, ys = xs.to(learner.device), ys.to(learner.device)
        t0 = time.perf_counter()
        # counted where the predictions are: on a GPU an int() per batch would wait for the device
        task_correct = torch.zeros((), dtype=torch.long, device=learner.device)
        for i in range(0, len(xs), bs):
            xb, yb = xs[i : i + bs], ys[i : i + bs]
            pred = learner.predict_proba(xb).argmax(dim=1)
            task_correct += (pred == yb).sum()
            t1 = time.perf_counter()
            learner.learn(xb, yb, task=t)
            learn_s += time.perf_counter() - t1
        if learner.device.type == "cuda":
            torch.cuda.synchronize()
        task_s = time.perf_counter() - t0
        loop_s += task_s
        seen += len(xs)
        correct += int(task_correct)
        accs = [accuracy(learner, other.eval_x, other.eval_y) for other in tasks[: t + 1]]
        scores.record(t, accs)
        if progress is not None:
            progress(
                f"[{learner_name}] task {t + 1:2d}/{len(tasks)}  acc(task)={accs[t]:.3f}  "
                f"mean acc so far={np.mean(accs):.3f}  prequential={correct / seen:.3f}  "
                f"{len(xs) / task_s:7.1f} ex/s"
            )
    # Accuracy on tasks not yet learned is not part of RA/LA/BTI, but the final row needs every task.
    return BenchResult(
        learner=learner_name,
        stream=stream.name,
        tasks=len(tasks),
        seed=seed,
        device=str(learner.device),
        batch_size=bs,
        fast_path=bool(getattr(learner, "fast_path", False)),
        ra=scores.ra,
        la=scores.la,
        bti=scores.bti,
        prequential_accuracy=correct / seen,
        examples=seen,
        examples_per_s=seen / loop_s,
        learn_examples_per_s=seen / learn_s,
        wall_s=time.perf_counter() - wall0,
        hparams=learner.hparams(),
        model=model,
        path=learner.path,
        accuracy_matrix=[[round(float(v), 4) for v in row[: i + 1]] for i, row in enumerate(scores.matrix)],
    )


def format_result(r: BenchResult) -> str:
    return (
        f"{r.learner} on {r.stream} ({r.tasks} tasks, seed {r.seed}, {r.device}, batch {r.batch_size}, "
        f"{r.model}, {r.path} path):\n"
        f"  RA  {r.ra:.4f}   LA  {r.la:.4f}   BTI {r.bti:+.4f}   "
        f"prequential accuracy {r.prequential_accuracy:.4f}\n"
        f"  {r.examples_per_s:.1f} examples/s (predict + learn; learn only {r.learn_examples_per_s:.1f}), "
        f"wall {r.wall_s:.1f} s"
    )


def stderr_progress(stream: TextIO = sys.stderr) -> Callable[[str], None]:
    def emit(line: str) -> None:
        print(line, file=stream, flush=True)

    return emit

"""Prequential (test-then-train) metrics for the live daemon, built on ``river``.

Every labelled example is predicted by the current model before it is learned; :class:`PrequentialMetrics`
records each outcome and exposes cumulative accuracy, rolling-window accuracy, Cohen's kappa, per-task
accuracy, a rolling mean loss and an ADWIN drift detector fed with the error stream (1 = wrong).

The metric arithmetic is river's (``metrics.Accuracy``, ``metrics.CohenKappa``, ``drift.ADWIN``); this
module feeds them and makes them checkpointable. The rolling accuracy is a count of correct outcomes in
the window (what river's ``utils.Rolling(Accuracy)`` computes, at a fifth of the cost per example).

The daemon queues outcomes with :meth:`PrequentialMetrics.add_probabilities` (about 2 µs a micro-batch)
and they are recorded in bulk when 256 are queued or when anything is read, so every value, snapshot
and ``state_dict`` is exactly that of recording each example at once; ADWIN still sees the outcomes
one by one, in order, and a drift it flags is reported to ``on_drift`` with the count and rolling
accuracy of the moment it was flagged. River objects are
arbitrary Python classes, so they cannot go into a checkpoint read with
``torch.load(weights_only=True)``. Instead :meth:`PrequentialMetrics.state_dict` stores the sufficient
statistics as plain values — confusion counts (overall and per task) and the last ``window`` outcomes
— and :meth:`PrequentialMetrics.load_state_dict` rebuilds the river objects from them.

>>> m = PrequentialMetrics(n_classes=2, window=2)
>>> m.update_many([0, 1, 1], [0, 0, 1], losses=[0.1, 2.0, 0.3])
0
>>> round(m.accuracy, 4), m.rolling_accuracy, round(m.loss, 4)
(0.6667, 0.5, 1.15)
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from river import drift, metrics

STATE_VERSION = 1
#: outcomes queued by ``add_probabilities`` before they are recorded without a read asking
QUEUE_EXAMPLES = 256

Confusion = list[list[int]]


class PrequentialMetrics:
    """Test-then-train metrics over a stream of ``(y_true, y_pred)`` outcomes.

    Empty-state values: ``accuracy``, ``rolling_accuracy`` and ``kappa`` are 0.0 before any example
    (river's convention); ``loss`` is NaN until an example with a loss arrives, because 0.0 would read
    as a perfect model on a dashboard.

    Restoring (:meth:`load_state_dict`) reproduces accuracy, rolling accuracy, kappa, per-task accuracy
    and loss exactly, so a restarted daemon continues the same numbers. ADWIN is the exception: its
    adaptive window can span far more than ``window`` examples, and river offers no way to export it,
    so after a restore ADWIN has only seen the last ``window`` outcomes (re-fed in order). Its
    detections after a restart may therefore differ from those of a run that never stopped; drifts it
    flags while being re-fed are not counted, since they were already counted before the checkpoint.
    """

    def __init__(self, n_classes: int, window: int = 1000, drift_delta: float = 0.002) -> None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._n_classes = n_classes
        self._window = window
        self._drift_delta = drift_delta
        #: called with (examples evaluated, rolling accuracy) when ADWIN flags a drift while queued
        #: outcomes are recorded (the synchronous ``update`` methods return their drifts instead)
        self.on_drift: Callable[[int, float], None] | None = None
        self._reset()

    def _reset(self) -> None:
        """Fresh river objects and empty windows (also the starting point of a restore)."""
        # Accuracy and kappa share one confusion matrix, so one update per example serves both.
        self._accuracy = metrics.Accuracy()
        self._kappa = metrics.CohenKappa(cm=self._accuracy.cm)
        self._tasks: dict[int, metrics.Accuracy] = {}
        self._adwin = drift.ADWIN(delta=self._drift_delta)
        # The last ``window`` outcomes and how many of them are right: the rolling accuracy.
        self._recent: deque[tuple[int, int]] = deque(maxlen=self._window)
        self._recent_correct = 0
        self._losses: deque[float] = deque(maxlen=self._window)
        self._n = 0
        self._drifts = 0
        # (probabilities float64 (k, n_classes), true labels, [(task, rows)]) per queued call
        self._queue: list[tuple[np.ndarray, Sequence[int], Sequence[tuple[int | None, int]]]] = []
        self._queued = 0

    # -- recording ----------------------------------------------------------------------------------

    def update(self, y_true: int, y_pred: int, loss: float | None = None, task: int | None = None) -> bool:
        """Record one test-then-train outcome.

        Returns True when ADWIN flags a drift on the error stream at this update, so the caller can log
        or react at the moment it happens rather than polling ``drifts``.
        """
        self._flush()
        y_true = self._label(y_true)
        y_pred = self._label(y_pred)
        self._accuracy.update(y_true, y_pred)
        self._push_recent(y_true, y_pred)
        if loss is not None:
            self._losses.append(float(loss))
        if task is not None:
            self._task_metric(operator.index(task)).update(y_true, y_pred)
        self._n += 1
        self._adwin.update(0.0 if y_true == y_pred else 1.0)
        if self._adwin.drift_detected:
            self._drifts += 1
            return True
        return False

    def update_many(
        self,
        y_true: Sequence[int],
        y_pred: Sequence[int],
        losses: Sequence[float] | None = None,
        task: int | None = None,
    ) -> int:
        """Record a micro-batch in order (all from one task); returns the number of drifts flagged."""
        if len(y_true) != len(y_pred) or (losses is not None and len(losses) != len(y_true)):
            raise ValueError("y_true, y_pred and losses must have the same length")
        per_example: Sequence[float | None] = [None] * len(y_true) if losses is None else losses
        return sum(
            self.update(t, p, loss=loss, task=task)
            for t, p, loss in zip(y_true, y_pred, per_example, strict=True)
        )

    def update_from_probabilities(
        self, probs: np.ndarray, y_true: Sequence[int], task: int | None = None
    ) -> int:
        """``update_many`` from class probabilities (n, n_classes): the guess is the most probable
        class, the loss the log loss of the true one. A row that overflowed to nan (an input far
        outside the data) is a wrong guess at the worst loss, never a nan in the metrics."""
        y_pred, losses = _guesses_and_losses(np.asarray(probs, dtype=np.float64), y_true)
        return self.update_many(y_true, y_pred, losses, task)

    def add_probabilities(self, probs: np.ndarray, y_true: Sequence[int], task: int | None = None) -> None:
        """Queue what :meth:`update_from_probabilities` records; recorded in bulk at the next read.

        ``probs`` (k, n_classes) is copied at once (the caller may reuse its buffer); ``y_true`` and
        ``task`` are checked now (a ValueError here, as there); drifts go to ``on_drift``.
        """
        self.add_runs(probs, y_true, [(task, len(y_true))])

    def add_runs(
        self, probs: np.ndarray, y_true: Sequence[int], runs: Sequence[tuple[int | None, int]]
    ) -> None:
        """:meth:`add_probabilities` for several micro-batches at once: ``runs`` gives their tasks in
        order as (task, number of rows). Nothing is queued if anything is refused."""
        k = len(y_true)
        probs = np.array(probs, dtype=np.float64)  # a copy: the caller may reuse its buffer
        if probs.shape != (k, self._n_classes) or sum(count for _, count in runs) != k:
            raise ValueError(
                f"probabilities of shape {probs.shape} for {k} labels of {self._n_classes} classes "
                f"in runs of {[count for _, count in runs]}"
            )
        for t in y_true:
            self._label(t)
        for task, _ in runs:
            if task is not None:
                operator.index(task)
        self._queue.append((probs, y_true, runs))
        self._queued += k
        if self._queued >= QUEUE_EXAMPLES:
            self._flush()

    def _flush(self) -> None:
        """Record the queued outcomes in order, as ``update`` would one by one (same values)."""
        if not self._queue:
            return
        queue, self._queue, self._queued = self._queue, [], 0
        labels = [t for _, y, _ in queue for t in y]
        runs = [run for _, _, batch_runs in queue for run in batch_runs]
        self._record(np.concatenate([p for p, _, _ in queue]), labels, runs)

    def _record(self, probs: np.ndarray, y: Sequence[int], runs: Sequence[tuple[int | None, int]]) -> None:
        """Record outcomes in order: float64 ``probs`` (n, n_classes), true labels, [task, count] runs."""
        y_true = np.array(y, dtype=np.int64)
        labels = y_true.tolist()  # Python ints: the window goes into checkpoints
        y_pred, losses = _guesses_and_losses(probs, y_true)
        pred = np.array(y_pred, dtype=np.int64)
        # Confusion counts: one weighted update per non-empty cell instead of one per example, and
        # per task once per run of batches of that task.
        self._add_counts(self._accuracy, y_true, pred)
        merged: list[list[Any]] = []  # [task, rows]: consecutive batches of one task together
        for task, count in runs:
            if merged and merged[-1][0] == task:
                merged[-1][1] += count
            else:
                merged.append([task, count])
        start = 0
        for task, count in merged:
            if task is not None:
                stop = start + count
                metric = self._task_metric(operator.index(task))
                self._add_counts(metric, y_true[start:stop], pred[start:stop])
            start += count
        self._losses.extend(losses)
        # The window and ADWIN need the order, one outcome at a time.
        adwin, push, on_drift = self._adwin, self._push_recent, self.on_drift
        for t, p in zip(labels, y_pred, strict=True):
            push(t, p)
            self._n += 1
            adwin.update(0.0 if t == p else 1.0)
            if adwin.drift_detected:
                self._drifts += 1
                if on_drift is not None:
                    on_drift(self._n, self._recent_correct / len(self._recent))

    def _add_counts(self, metric: metrics.Accuracy, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        n = self._n_classes
        counts = np.bincount(y_true * n + y_pred, minlength=n * n)
        for cell in np.flatnonzero(counts).tolist():
            metric.update(cell // n, cell % n, w=float(counts[cell]))

    def _push_recent(self, y_true: int, y_pred: int) -> None:
        recent = self._recent
        if len(recent) == self._window:
            old_true, old_pred = recent[0]
            self._recent_correct -= old_true == old_pred
        recent.append((y_true, y_pred))
        self._recent_correct += y_true == y_pred

    def _label(self, y: int) -> int:
        # operator.index accepts numpy integers but rejects floats, which would silently truncate.
        y = operator.index(y)
        if not 0 <= y < self._n_classes:
            raise ValueError(f"label {y} outside [0, {self._n_classes})")
        return y

    def _task_metric(self, task: int) -> metrics.Accuracy:
        metric = self._tasks.get(task)
        if metric is None:
            metric = self._tasks[task] = metrics.Accuracy()
        return metric

    # -- read-only values ---------------------------------------------------------------------------

    @property
    def n_classes(self) -> int:
        return self._n_classes

    @property
    def window(self) -> int:
        return self._window

    @property
    def n(self) -> int:
        """Examples evaluated."""
        self._flush()
        return self._n

    @property
    def accuracy(self) -> float:
        """Cumulative prequential accuracy."""
        self._flush()
        return float(self._accuracy.get())

    @property
    def rolling_accuracy(self) -> float:
        """Accuracy over the last ``window`` examples."""
        self._flush()
        return self._recent_correct / len(self._recent) if self._recent else 0.0

    @property
    def kappa(self) -> float:
        """Cumulative Cohen's kappa: accuracy corrected for the agreement expected by chance."""
        self._flush()
        return float(self._kappa.get())

    @property
    def loss(self) -> float:
        """Mean loss over the last ``window`` examples that carried one; NaN if none has.

        Not river's ``Rolling(stats.Mean)``: its update/revert arithmetic rounds differently depending
        on the whole history, so a window re-fed after a restore would drift from an uninterrupted run
        in the last bits. ``math.fsum`` of the window is correctly rounded and depends only on the
        window's contents, which makes the restore exact. It costs O(window) per read, and reads happen
        per snapshot, not per example.
        """
        self._flush()
        if not self._losses:
            return math.nan
        return math.fsum(self._losses) / len(self._losses)

    @property
    def task_accuracy(self) -> dict[int, float]:
        """Cumulative accuracy per task id seen."""
        self._flush()
        return {task: float(m.get()) for task, m in self._tasks.items()}

    @property
    def task_counts(self) -> dict[int, int]:
        """Examples evaluated per task id seen."""
        self._flush()
        return {task: int(m.cm.total_weight) for task, m in self._tasks.items()}

    @property
    def drifts(self) -> int:
        """Drifts ADWIN has flagged in total (including before a restore)."""
        self._flush()
        return self._drifts

    def snapshot(self) -> dict[str, float | int | dict[int, float] | dict[int, int]]:
        """All values in one dict, for Prometheus export, logs and the checkpoint summary."""
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "rolling_accuracy": self.rolling_accuracy,
            "kappa": self.kappa,
            "loss": self.loss,
            "drifts": self.drifts,
            "task_accuracy": self.task_accuracy,
            "task_counts": self.task_counts,
        }

    # -- checkpointing ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain values only (ints, floats, lists, dicts), so ``torch.load(weights_only=True)`` reads it."""
        self._flush()
        return {
            "version": STATE_VERSION,
            "n_classes": self._n_classes,
            "window": self._window,
            "n": self._n,
            "drifts": self._drifts,
            "confusion": self._confusion(self._accuracy),
            "task_confusion": {task: self._confusion(m) for task, m in self._tasks.items()},
            "recent_true": [t for t, _ in self._recent],
            "recent_pred": [p for _, p in self._recent],
            "recent_losses": list(self._losses),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the river objects from a :meth:`state_dict`.

        Work is O(n_classes² × tasks + window), independent of how many examples the state covers. A
        state saved with a different ``window`` loads too (the daemon's config may change between
        runs): the rolling values then start from the saved outcomes that fit the current window.
        """
        self._check_state(state)
        self._reset()
        self._replay_confusion(self._accuracy, state["confusion"])
        for task, confusion in state["task_confusion"].items():
            self._replay_confusion(self._task_metric(int(task)), confusion)
        self._refeed_window(state["recent_true"], state["recent_pred"])
        self._losses.extend(float(x) for x in state["recent_losses"])
        self._n = int(state["n"])
        self._drifts = int(state["drifts"])

    def _confusion(self, metric: metrics.Accuracy) -> Confusion:
        counts = [[0] * self._n_classes for _ in range(self._n_classes)]
        # Iterate river's sparse rows rather than indexing: its defaultdicts would grow on every lookup.
        for t, row in metric.cm.data.items():
            for p, w in row.items():
                counts[t][p] = int(w)
        return counts

    @staticmethod
    def _replay_confusion(metric: metrics.Accuracy, confusion: Confusion) -> None:
        # One weighted update per non-empty cell instead of one per example. Counts are integers, so
        # the float sums river accumulates come out bit-identical to adding 1.0 at a time.
        for t, row in enumerate(confusion):
            for p, count in enumerate(row):
                if count:
                    metric.update(t, p, w=float(count))

    def _refeed_window(self, recent_true: Sequence[int], recent_pred: Sequence[int]) -> None:
        keep = min(len(recent_true), self._window)
        for t, p in zip(recent_true[-keep:], recent_pred[-keep:], strict=True):
            self._push_recent(t, p)
            # Only to warm ADWIN up; any drift it finds here was already counted before the checkpoint.
            self._adwin.update(0.0 if t == p else 1.0)

    def _check_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported prequential state version {state.get('version')!r}")
        if state["n_classes"] != self._n_classes:
            raise ValueError(f"state has {state['n_classes']} classes, these metrics {self._n_classes}")
        for confusion in [state["confusion"], *state["task_confusion"].values()]:
            if len(confusion) != self._n_classes or any(len(row) != self._n_classes for row in confusion):
                raise ValueError(f"confusion counts are not {self._n_classes}x{self._n_classes}")
        if len(state["recent_true"]) != len(state["recent_pred"]):
            raise ValueError("recent_true and recent_pred differ in length")
        total = sum(map(sum, state["confusion"]))
        if total != state["n"]:
            raise ValueError(f"confusion counts sum to {total}, but n is {state['n']}")


def _guesses_and_losses(
    probs: np.ndarray, y_true: Sequence[int] | np.ndarray
) -> tuple[list[int], list[float]]:
    """The most probable class and the log loss of the true one, per row of float64 ``probs``.

    A row that overflowed to nan (an input far outside the data) is a wrong guess at the worst loss,
    never a nan in the metrics."""
    probs = np.nan_to_num(probs, nan=0.0)
    p_true = np.maximum(probs[np.arange(len(y_true)), np.asarray(y_true, dtype=np.int64)], 1e-12)
    return probs.argmax(axis=1).tolist(), (-np.log(p_true)).tolist()

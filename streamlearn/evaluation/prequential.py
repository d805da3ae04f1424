"""Prequential (test-then-train) metrics for the live daemon, built on ``river``.

Every labelled example is predicted by the current model before it is learned; :class:`PrequentialMetrics`
records each outcome and exposes cumulative accuracy, rolling-window accuracy, Cohen's kappa, per-task
accuracy, a rolling mean loss and an ADWIN drift detector fed with the error stream (1 = wrong).

The metric arithmetic is river's (``metrics.Accuracy``, ``metrics.CohenKappa``, ``utils.Rolling``,
``drift.ADWIN``); this module only feeds them and makes them checkpointable. River objects are
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
from collections.abc import Sequence
from typing import Any

import numpy as np
from river import drift, metrics, utils

STATE_VERSION = 1

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
        self._reset()

    def _reset(self) -> None:
        """Fresh river objects and empty windows (also the starting point of a restore)."""
        # Accuracy and kappa share one confusion matrix, so one update per example serves both.
        self._accuracy = metrics.Accuracy()
        self._kappa = metrics.CohenKappa(cm=self._accuracy.cm)
        self._rolling = utils.Rolling(metrics.Accuracy, window_size=self._window)
        self._tasks: dict[int, metrics.Accuracy] = {}
        self._adwin = drift.ADWIN(delta=self._drift_delta)
        # Our own copy of the window: river's Rolling keeps one too, but its layout is an internal detail.
        self._recent: deque[tuple[int, int]] = deque(maxlen=self._window)
        self._losses: deque[float] = deque(maxlen=self._window)
        self._n = 0
        self._drifts = 0

    # -- recording ----------------------------------------------------------------------------------

    def update(self, y_true: int, y_pred: int, loss: float | None = None, task: int | None = None) -> bool:
        """Record one test-then-train outcome.

        Returns True when ADWIN flags a drift on the error stream at this update, so the caller can log
        or react at the moment it happens rather than polling ``drifts``.
        """
        y_true = self._label(y_true)
        y_pred = self._label(y_pred)
        self._accuracy.update(y_true, y_pred)
        self._rolling.update(y_true, y_pred)
        self._recent.append((y_true, y_pred))
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
        probs = np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0)
        p_true = np.maximum(probs[np.arange(len(y_true)), np.asarray(y_true, dtype=np.int64)], 1e-12)
        return self.update_many(y_true, probs.argmax(axis=1).tolist(), (-np.log(p_true)).tolist(), task)

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
        return self._n

    @property
    def accuracy(self) -> float:
        """Cumulative prequential accuracy."""
        return float(self._accuracy.get())

    @property
    def rolling_accuracy(self) -> float:
        """Accuracy over the last ``window`` examples."""
        return float(self._rolling.obj.get())

    @property
    def kappa(self) -> float:
        """Cumulative Cohen's kappa: accuracy corrected for the agreement expected by chance."""
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
        if not self._losses:
            return math.nan
        return math.fsum(self._losses) / len(self._losses)

    @property
    def task_accuracy(self) -> dict[int, float]:
        """Cumulative accuracy per task id seen."""
        return {task: float(m.get()) for task, m in self._tasks.items()}

    @property
    def task_counts(self) -> dict[int, int]:
        """Examples evaluated per task id seen."""
        return {task: int(m.cm.total_weight) for task, m in self._tasks.items()}

    @property
    def drifts(self) -> int:
        """Drifts ADWIN has flagged in total (including before a restore)."""
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
            self._rolling.update(t, p)
            self._recent.append((t, p))
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

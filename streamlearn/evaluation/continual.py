"""Continual-learning scores from the task-by-task accuracy matrix.

``R[i][j]`` is the accuracy on task j's evaluation set after learning tasks 0..i. From it:

- RA (retained accuracy): mean over tasks of the final accuracy ``R[T-1][j]``;
- LA (learning accuracy): mean of ``R[t][t]``, the accuracy on a task right after learning it;
- BTI (backward transfer and interference): mean of ``R[t][t] − R[T-1][t]``; positive = forgetting.

>>> s = ContinualScores(2)
>>> s.record(0, [0.9, 0.1]); s.record(1, [0.7, 0.8])
>>> round(s.ra, 3), round(s.la, 3), round(s.bti, 3)
(0.75, 0.85, 0.1)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ContinualScores:
    def __init__(self, n_tasks: int) -> None:
        self.n_tasks = n_tasks
        self.matrix = np.full((n_tasks, n_tasks), np.nan)

    def record(self, after_task: int, accuracies: Sequence[float]) -> None:
        """Accuracies on every task's eval set after learning task ``after_task``."""
        self.matrix[after_task, : len(accuracies)] = accuracies

    @property
    def learned(self) -> int:
        return int(np.sum(~np.isnan(self.matrix[:, 0])))

    @property
    def ra(self) -> float:
        t = self.learned
        return float(np.mean(self.matrix[t - 1, :t]))

    @property
    def la(self) -> float:
        t = self.learned
        return float(np.mean(np.diag(self.matrix)[:t]))

    @property
    def bti(self) -> float:
        t = self.learned
        return float(np.mean(np.diag(self.matrix)[:t] - self.matrix[t - 1, :t]))

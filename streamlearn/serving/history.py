"""The live page's memory: a fixed-size ring buffer of one sample a second, oldest overwritten.

One row per sample, one float64 column per series (``COLUMNS``), allocated once: the history of a
server that ran for a week takes exactly the memory of one that ran for an hour (``SIZE`` rows x
``len(COLUMNS)`` columns x 8 bytes = 403 KB with the defaults; ``benchmarks/page_cost.py`` measures
it). A value the server does not have (a replica has no consumer lag) is NaN, sent as JSON null.

>>> h = History(size=2)
>>> for t in (1.0, 2.0, 3.0):
...     h.append(t, {"accuracy": t / 10})
>>> h.since(0.0)["t"], h.since(0.0)["accuracy"], h.since(2.0)["t"]
([2.0, 3.0], [0.2, 0.3], [3.0])
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

import numpy as np

#: samples kept: one a second for an hour
SIZE = 3600
#: the series, in column order; ``t`` is the sample's time (Unix seconds)
COLUMNS = (
    "t",
    "accuracy",
    "rolling",
    "learned",
    "rate",
    "lag",
    "cosine",
    "lr_mean",
    "lr_min",
    "lr_max",
    "model_version",
    "published_version",
    "served_version",
    "loss",
)
_INDEX = {name: i for i, name in enumerate(COLUMNS)}


class History:
    """A ring buffer of samples; thread-safe (one sampler writes, request threads read)."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._rows = np.full((size, len(COLUMNS)), np.nan)
        self._next = 0  # the slot the next sample goes to
        self._count = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return int(self._rows.nbytes)

    def __len__(self) -> int:
        return self._count

    def append(self, t: float, values: Mapping[str, float | None]) -> None:
        row = np.full(len(COLUMNS), np.nan)
        row[0] = t
        for name, v in values.items():
            if v is not None:
                row[_INDEX[name]] = v
        with self._lock:
            self._rows[self._next] = row
            self._next = (self._next + 1) % self.size
            self._count = min(self._count + 1, self.size)

    def since(self, t: float) -> dict[str, list[float | None]]:
        """The samples newer than ``t``, oldest first, as one list per column (NaN as None)."""
        with self._lock:
            start = (self._next - self._count) % self.size
            order = (np.arange(self._count) + start) % self.size
            rows = self._rows[order]
        rows = rows[rows[:, 0] > t]
        return {
            name: [None if math.isnan(v) else v for v in rows[:, i].tolist()]
            for i, name in enumerate(COLUMNS)
        }

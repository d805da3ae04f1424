"""The golden set: trusted labelled examples, in the message format, scored for each candidate.

``guard.golden`` names a JSONL file (one example message per line) or ``topic:NAME``, a topic read
from its beginning to its end when the daemon starts. Messages are decoded by the daemon's own
decoder (same label and task names); one the decoder refuses is an error, not a dead letter: a
golden set is curated, so a bad line in it is a mistake the operator must see.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from streamlearn.errors import ConfigError
from streamlearn.ingest.decode import Decoder, Rejection
from streamlearn.learners import Learner


class GoldenSet:
    """Examples as tensors, with their task ids, scored per task."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, task: np.ndarray) -> None:
        self.x = x
        self.y = y
        self.task = np.asarray(task)
        # each task's examples gathered once: a candidate is scored every promote_every examples
        self._by_task: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for t in np.unique(self.task):
            idx = torch.from_numpy(np.flatnonzero(self.task == t))
            self._by_task[int(t)] = (x[idx].contiguous(), y[idx])

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @classmethod
    def from_messages(cls, messages: Iterable[bytes], decoder: Decoder, *, source: str) -> GoldenSet:
        xs, ys, tasks = [], [], []
        for i, raw in enumerate(messages):
            ex = decoder.decode(raw)
            if isinstance(ex, Rejection):
                raise ConfigError(
                    f"guard.golden {source}: example {i + 1} refused: {ex.reason} ({ex.detail})"
                )
            xs.append(ex.x)
            ys.append(ex.y)
            tasks.append(-1 if ex.task is None else ex.task)
        if not xs:
            raise ConfigError(f"guard.golden {source}: no examples")
        return cls(torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.long), np.array(tasks))

    @classmethod
    def from_file(cls, path: str | Path, decoder: Decoder) -> GoldenSet:
        try:
            lines = Path(path).read_bytes().splitlines()
        except OSError as exc:
            raise ConfigError(f"guard.golden: cannot read {path}: {exc.strerror or exc}") from None
        return cls.from_messages((ln for ln in lines if ln.strip()), decoder, source=str(path))

    def has_task(self, task: int | None) -> bool:
        """Does the set hold examples of ``task`` (None: a stream without task ids — no)?"""
        return task is not None and task in self._by_task

    def correct(self, learner: Learner, task: int | None = None) -> list[bool]:
        """Whether ``learner`` predicts each golden example of ``task`` right (all examples when
        the set holds none of that task)."""
        x, y = self._by_task.get(task, (self.x, self.y)) if task is not None else (self.x, self.y)
        return (learner.predict_proba(x).argmax(dim=1) == y).tolist()

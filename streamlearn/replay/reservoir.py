"""Reservoir-sampled replay buffer (Vitter's algorithm R) on preallocated tensors.

Every example ever offered has the same probability ``capacity / seen`` of being in the buffer,
whatever the order of the stream — which is what makes replay an unbiased sample of the past for
a learner that sees each example once.

>>> import torch
>>> buf = ReservoirBuffer(capacity=3, n_inputs=2, seed=0)
>>> buf.add(torch.ones(5, 2), torch.arange(5))
>>> len(buf), buf.seen
(3, 5)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

#: ``evict_outliers``: a stored row is an outlier when its largest |feature| is this many times the
#: median row's (far beyond any honest spread of one stream's scale; ×1e6 features are caught).
OUTLIER_FACTOR = 1000.0


class ReservoirBuffer:
    """Fixed-capacity uniform sample of a stream, stored on the learner's device.

    Tensors are allocated once at full capacity so that adding and sampling never allocate device
    memory in the hot loop. ``seen`` (the reservoir counter) is part of the state: without it a
    restored buffer would over-weight the examples that arrive after a restart.
    """

    def __init__(
        self,
        capacity: int,
        n_inputs: int,
        *,
        device: str | torch.device = "cpu",
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.n_inputs = int(n_inputs)
        self.device = torch.device(device)
        self.x = torch.zeros(self.capacity, self.n_inputs, dtype=dtype, device=self.device)
        self.y = torch.zeros(self.capacity, dtype=torch.long, device=self.device)
        # -1 marks "no task id"; task ids are small non-negative ints assigned by the caller.
        self.task = torch.full((self.capacity,), -1, dtype=torch.long, device=self.device)
        self.size = 0
        self.seen = 0
        self.rng = np.random.Generator(np.random.PCG64(seed))
        #: while an update may still be undone: what ``add`` overwrote, oldest first (see ``mark``)
        self._journal: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._marked: tuple[int, int, Mapping[str, Any]] | None = None

    def __len__(self) -> int:
        return self.size

    def add(self, x: torch.Tensor, y: torch.Tensor, task: int | None = None) -> None:
        """Offer each row of ``x`` to the reservoir (algorithm R)."""
        t = -1 if task is None else int(task)
        for i in range(x.shape[0]):
            self.seen += 1
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            else:
                # Uniform over the `seen` items so far; lands in the buffer with p = capacity/seen.
                slot = int(self.rng.integers(0, self.seen))
                if slot >= self.capacity:
                    continue
            if self._journal is not None:
                self._journal.append(
                    (slot, self.x[slot].clone(), self.y[slot].clone(), self.task[slot].clone())
                )
            self.x[slot] = x[i]
            self.y[slot] = y[i]
            self.task[slot] = t

    # -- undo -------------------------------------------------------------------------------
    def mark(self) -> None:
        """Remember the state so that ``undo`` can return to it; ``release`` forgets it.

        Cheaper than a copy of the buffer: only the slots that ``add`` overwrites are saved, so
        the learner can afford a mark before every update (its guard undoes a non-finite one).
        """
        self._journal = []
        self._marked = (self.size, self.seen, self.rng.bit_generator.state)

    def undo(self) -> None:
        """Back to the state at ``mark``: contents, counters and the draws' random state."""
        if self._journal is None or self._marked is None:
            raise RuntimeError("undo() without mark()")
        for slot, x, y, task in reversed(self._journal):
            self.x[slot], self.y[slot], self.task[slot] = x, y, task
        self.size, self.seen, rng_state = self._marked
        self.rng.bit_generator.state = rng_state
        self.release()

    def written(self) -> torch.Tensor:
        """The rows ``add`` has written since ``mark`` (as they are now)."""
        slots = sorted({slot for slot, *_ in self._journal or ()})
        # non_blocking: on a GPU a blocking upload would wait for the update's kernels (a sync)
        return self.x[torch.as_tensor(slots, dtype=torch.long).to(self.device, non_blocking=True)]

    def release(self) -> None:
        self._journal = None
        self._marked = None

    def evict_outliers(self, factor: float = OUTLIER_FACTOR) -> int:
        """Remove the stored rows whose largest |feature| is over ``factor`` times the median
        row's, and return how many. The learner calls this when its guard undoes an update: one
        example of extreme but finite magnitude (features sent ×1e6) may pass the guard when it is
        learned, then blow up every later update that replays it, so learning would stall for ever.
        The kept rows move to the front, in order; ``seen`` stays, so later offers fill the gap.

        >>> buf = ReservoirBuffer(4, 2)
        >>> buf.add(torch.tensor([[0.5, 1.0], [1e6, 0.0], [0.2, 0.1]]), torch.tensor([0, 1, 2]))
        >>> buf.evict_outliers(), len(buf), buf.y[:2].tolist()
        (1, 2, [0, 2])
        """
        if self.size == 0:
            return 0
        magnitude = self.x[: self.size].abs().amax(dim=1)
        bad = magnitude > factor * max(float(magnitude.median()), 1e-12)
        n_bad = int(bad.sum())
        if n_bad:
            keep = (~bad).nonzero().flatten()
            k = int(keep.numel())
            self.x[:k], self.y[:k], self.task[:k] = self.x[keep], self.y[keep], self.task[keep]
            self.size = k
        return n_bad

    def sample_indices(self, n: int) -> np.ndarray:
        """Indices of ``min(n, len(self))`` distinct stored examples, uniformly at random."""
        k = min(int(n), self.size)
        if k == 0:
            return np.empty(0, dtype=np.int64)
        return self.rng.choice(self.size, size=k, replace=False)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A draw of distinct examples (without replacement within the draw)."""
        idx = torch.as_tensor(self.sample_indices(n), device=self.device)
        return self.x[idx], self.y[idx]

    def copy(self) -> ReservoirBuffer:
        """A frozen copy (La-MAML's ``use_old_task_memory`` samples the buffer as of a task switch)."""
        other = ReservoirBuffer.__new__(ReservoirBuffer)
        other.capacity, other.n_inputs, other.device = self.capacity, self.n_inputs, self.device
        other.x, other.y, other.task = self.x.clone(), self.y.clone(), self.task.clone()
        other.size, other.seen = self.size, self.seen
        other.rng = self.rng  # shares the stream of draws: a snapshot is sampled, never filled
        other._journal, other._marked = None, None
        return other

    def class_counts(self, n_classes: int) -> list[int]:
        counts = torch.bincount(self.y[: self.size], minlength=n_classes)
        return [int(c) for c in counts.tolist()]

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "n_inputs": self.n_inputs,
            "x": self.x[: self.size].detach().cpu().clone(),
            "y": self.y[: self.size].detach().cpu().clone(),
            "task": self.task[: self.size].detach().cpu().clone(),
            "seen": self.seen,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity or int(state["n_inputs"]) != self.n_inputs:
            raise ValueError(
                f"replay buffer shape mismatch: checkpoint has capacity={state['capacity']} "
                f"n_inputs={state['n_inputs']}, this learner capacity={self.capacity} "
                f"n_inputs={self.n_inputs}"
            )
        n = int(state["x"].shape[0])
        self.x.zero_()
        self.y.zero_()
        self.task.fill_(-1)
        self.x[:n] = state["x"].to(self.device)
        self.y[:n] = state["y"].to(self.device)
        self.task[:n] = state["task"].to(self.device)
        self.size = n
        self.seen = int(state["seen"])
        self.rng.bit_generator.state = state["rng"]

    def nbytes(self) -> int:
        """Device memory held by the buffer: capacity × example size, allocated up front."""
        return sum(t.element_size() * t.nelement() for t in (self.x, self.y, self.task))

"""The non-finite guard: an update that breaks the model is undone, whatever the configuration.

One message with a feature of 1e30 is finite, so it passes the decoder; learning it drives the
first layer's weights to ~1e29 and the next forward pass overflows float32, after which every weight
is NaN for good (and every checkpoint after it holds the broken model). So before each update the
learner takes a *mark* — a copy of every tensor it learns (weights, La-MAML's learning rates), its
random states and a journal of the replay buffer — and after it checks the update's loss and the
largest magnitude of every value the learner now holds: weights, learning rates, and the examples
it just stored for replay. A non-finite loss or value, or a value beyond ``max_abs_value`` (far
past anything a trained classifier holds or a scaled feature takes, and on the way to float32's
3.4e38), undoes the update exactly: the learner is as if the batch had never arrived, and the
caller dead-letters it (``UpdateStats.undone`` says why). The replay memory needs the check as much
as the weights: a confident model learns nothing from a 1e30 example (its gradient rounds to 0),
but once stored, the example is replayed into every later update.

There is no switch to turn this off: the mark costs a copy of the weights (~360 KB for the
784-100-100-10 MLP, tens of µs) and the check one pass over them, a few percent of an MER update.

>>> import torch
>>> from streamlearn.learners import make_learner, mlp
>>> learner = make_learner("sgd", mlp(4, 3, hidden=(8,)), n_classes=3)
>>> before = [p.clone() for p in learner.model.parameters()]
>>> stats = learner.learn(torch.full((1, 4), 1e30), torch.tensor([1]))
>>> stats.undone is not None, learner.examples
(True, 0)
>>> all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

#: The default bound on any learned value's magnitude (``guard.max_abs_value``).
DEFAULT_MAX_ABS_VALUE = 1e6


class UpdateUndo:
    """Mark, check, and undo or release, around one update of a learner.

    ``tensors`` are the learner's live tensors, changed in place by its updates (they must stay the
    same objects for the learner's life: the numpy kernels hold views of them).
    """

    def __init__(self, tensors: Sequence[torch.Tensor], max_abs_value: float = DEFAULT_MAX_ABS_VALUE) -> None:
        self.live = [t.detach() for t in tensors if t.numel()]
        self.saved = [t.clone() for t in self.live]
        self.max_abs_value = float(max_abs_value)
        # On the CPU, numpy views read the extremes without the temporary that abs() allocates
        # (half the check's cost on the 784-100-100-10 MLP); max and min propagate NaN either way.
        cpu = all(t.device.type == "cpu" for t in self.live)
        self._views = [t.numpy() for t in self.live] if cpu else None

    def mark(self) -> None:
        with torch.no_grad():
            for s, t in zip(self.saved, self.live, strict=True):
                s.copy_(t)

    def problem(self, loss: float, stored: torch.Tensor | None = None) -> str | None:
        """Why the update must be undone, or None when it may stand (``stored``: the rows the
        update put in the replay memory)."""
        if not math.isfinite(loss):
            return f"the update's loss is {loss}"
        with torch.no_grad():
            if self._views is not None:
                worst = 0.0
                for v in self._views:
                    hi, lo = float(v.max()), float(v.min())
                    if math.isnan(hi) or math.isnan(lo):
                        worst = math.nan
                        break
                    worst = max(worst, hi, -lo)
            else:
                worst = float(torch.stack([t.abs().amax() for t in self.live]).amax())
            kept = float(stored.abs().amax()) if stored is not None and stored.numel() else 0.0
        return self._judge(worst, kept)

    def settle(
        self, on_device: dict[str, torch.Tensor], stored: torch.Tensor | None = None
    ) -> tuple[str | None, dict[str, float]]:
        """``problem`` for an update whose loss (``on_device["loss"]``) and other reported values are
        still on the device (the device path): the extremes are reduced there too, and everything
        comes back in one transfer, the update's only sync. Returns the verdict and the values."""
        with torch.no_grad():
            floats = [t for t in self.live if t.is_floating_point()]  # a counter buffer cannot overflow
            worst = torch.stack(torch._foreach_norm(floats, ord=math.inf)).amax()
            kept = stored.abs().amax() if stored is not None and stored.numel() else torch.zeros_like(worst)
            read = torch.stack([worst, kept, *(v.to(worst.dtype) for v in on_device.values())]).tolist()
        values = dict(zip(on_device, read[2:], strict=True))
        loss = values["loss"]
        if not math.isfinite(loss):
            return f"the update's loss is {loss}", values
        return self._judge(read[0], read[1]), values

    def _judge(self, worst: float, kept: float) -> str | None:
        for what, value in (("a weight", worst), ("a stored feature", kept)):
            if math.isnan(value) or math.isinf(value):
                return f"the update made {what} {value}"
            if value > self.max_abs_value:
                return (
                    f"the update made {what} {value:.3g} in magnitude, beyond guard.max_abs_value "
                    f"{self.max_abs_value:.3g}"
                )
        return None

    def undo(self) -> None:
        with torch.no_grad():
            for s, t in zip(self.saved, self.live, strict=True):
                t.copy_(s)


def rng_states(*generators: Any) -> list[Any]:
    return [g.bit_generator.state for g in generators]


def restore_rng_states(generators: Sequence[Any], states: Sequence[Any]) -> None:
    for g, s in zip(generators, states, strict=True):
        g.bit_generator.state = s

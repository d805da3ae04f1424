"""ER — experience replay with a reservoir buffer (the baseline MER and La-MAML improve on).

Each incoming micro-batch is learned together with ``replay_batch_size`` examples drawn from the
reservoir, one SGD step on their mean loss per glance (a fresh draw each glance); then the
incoming examples are offered to the reservoir.

The defaults follow the MER paper's ER protocol on MNIST streams — one example at a time, five
replay steps per example (``glances=5``), lr 0.1, 200 memories, replay batch 10. Measured on
rotated-mnist-10k (seed 0): RA 0.674 this way, against 0.635 for batches of 10 with one glance and
0.664 for batches of 10 with five.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from streamlearn.bounds import NonNegativeInt, PositiveFloat, PositiveInt
from streamlearn.learners.base import UpdateStats
from streamlearn.learners.sgd import SGD
from streamlearn.replay import ReservoirBuffer


class ER(SGD):
    """Each micro-batch learned together with a fresh replay sample, ``glances`` times.

    Parameters
    ----------
    model, n_classes, device, seed, alignment_every
        As for ``SGD``.
    lr
        SGD step size.
    memories
        Capacity of the reservoir buffer (examples).
    replay_batch_size
        Examples drawn from the reservoir for each step.
    glances
        Steps taken on each incoming micro-batch, each with its own replay draw.
    grad_clip_norm
        Clip each step's gradient to this total L2 norm; None does not clip.

    >>> import torch
    >>> from streamlearn.learners.nets import mlp
    >>> learner = ER(mlp(4, 3, hidden=(8,)), n_classes=3, memories=4, replay_batch_size=2, glances=2)
    >>> x, y = torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    >>> for i in range(6):
    ...     _ = learner.learn(x[i : i + 1], y[i : i + 1])
    >>> len(learner.buffer), learner.predict_proba(x).shape
    (4, torch.Size([6, 3]))
    >>> learner.hparams()["glances"]
    2
    """

    name: ClassVar[str] = "er"
    default_batch_size: ClassVar[int] = 1

    def __init__(
        self,
        model: nn.Module,
        *,
        n_classes: PositiveInt,
        lr: PositiveFloat = 0.1,
        memories: PositiveInt = 200,
        replay_batch_size: PositiveInt = 10,
        glances: PositiveInt = 5,
        grad_clip_norm: PositiveFloat | None = None,
        device: str = "cpu",
        seed: NonNegativeInt = 0,
        alignment_every: NonNegativeInt = 0,
    ) -> None:
        super().__init__(
            model,
            n_classes=n_classes,
            lr=lr,
            grad_clip_norm=grad_clip_norm,
            device=device,
            seed=seed,
            alignment_every=alignment_every,
        )
        self.memories = int(memories)
        self.replay_batch_size = int(replay_batch_size)
        self.glances = int(glances)
        self.buffer = ReservoirBuffer(self.memories, self.n_inputs, device=self.device, seed=seed)

    def _learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> UpdateStats:
        assert self.buffer is not None
        total = 0.0
        for _ in range(self.glances):
            bx, by = self.buffer.sample(self.replay_batch_size)
            total += self._step(torch.cat([bx, x]), torch.cat([by, y]))
        self.buffer.add(x, y, task)
        return UpdateStats(n=int(x.shape[0]), loss=total / self.glances)

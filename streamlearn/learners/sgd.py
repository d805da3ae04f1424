"""Plain online SGD: one step on each incoming micro-batch, no memory. The forgetting baseline.

Default lr 0.01: with single-example steps, lr 0.1 (the replay learners' rate, whose steps average
over 11 examples) diverges on rotated-mnist-10k (LA 0.29); 0.01 learns each task (LA 0.86) and
shows the forgetting the replay learners exist to prevent (RA 0.40).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from streamlearn.bounds import NonNegativeInt, PositiveFloat, PositiveInt
from streamlearn.learners import functional as F_
from streamlearn.learners.base import Learner, UpdateStats


class SGD(Learner):
    """One SGD step on the mean cross-entropy of each incoming micro-batch.

    Parameters
    ----------
    model
        Any ``nn.Module`` from (n, n_inputs) float inputs to (n, n_classes) logits.
    n_classes
        Number of classes.
    lr
        Step size (0 would learn nothing).
    grad_clip_norm
        Clip the gradient to this total L2 norm first; None does not clip.
    device, seed, alignment_every
        Where the model lives, the seed of the learner's random choices, and every how many
        updates to measure gradient alignment (0: never); see ``Learner``.

    >>> import torch
    >>> from streamlearn.learners.nets import mlp
    >>> learner = SGD(mlp(4, 3, hidden=(8,)), n_classes=3, lr=0.05)
    >>> x, y = torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    >>> for i in range(6):
    ...     _ = learner.learn(x[i : i + 1], y[i : i + 1])
    >>> p = learner.predict_proba(x)
    >>> p.shape, bool(torch.allclose(p.sum(1), torch.ones(6)))
    (torch.Size([6, 3]), True)
    >>> learner.hparams()
    {'lr': 0.05, 'grad_clip_norm': None}
    """

    name: ClassVar[str] = "sgd"
    default_batch_size: ClassVar[int] = 1

    def __init__(
        self,
        model: nn.Module,
        *,
        n_classes: PositiveInt,
        lr: PositiveFloat = 0.01,
        grad_clip_norm: PositiveFloat | None = None,
        device: str = "cpu",
        seed: NonNegativeInt = 0,
        alignment_every: NonNegativeInt = 0,
    ) -> None:
        super().__init__(
            model, n_classes=n_classes, device=device, seed=seed, alignment_every=alignment_every
        )
        self.lr = float(lr)
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        self._params = list(self.model.parameters())

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = F.cross_entropy(self.model(x), y)
        g = list(torch.autograd.grad(loss, self._params))
        F_.clip_(g, self.grad_clip_norm)
        with torch.no_grad():
            for p, gp in zip(self._params, g, strict=True):
                p.sub_(self.lr * gp)
        return float(loss.detach())

    def _learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> UpdateStats:
        return UpdateStats(n=int(x.shape[0]), loss=self._step(x, y))

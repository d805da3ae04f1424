"""Plain online SGD: one step on each incoming micro-batch, no memory. The forgetting baseline.

Default lr 0.01: with single-example steps, lr 0.1 (the replay learners' rate, whose steps average
over 11 examples) diverges on rotated-mnist-10k (LA 0.29); 0.01 learns each task (LA 0.86) and
shows the forgetting the replay learners exist to prevent (RA 0.40).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from streamlearn.learners import functional as F_
from streamlearn.learners.base import Learner, UpdateStats


class SGD(Learner):
    name: ClassVar[str] = "sgd"
    default_batch_size: ClassVar[int] = 1

    def __init__(
        self,
        model: nn.Module,
        *,
        n_classes: int,
        lr: float = 0.01,
        grad_clip_norm: float | None = None,
        device: str = "cpu",
        seed: int = 0,
        alignment_every: int = 0,
    ) -> None:
        super().__init__(
            model, n_classes=n_classes, device=device, seed=seed, alignment_every=alignment_every
        )
        self.lr = float(lr)
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        self._params = list(self.model.parameters())

    def hparams(self) -> dict[str, Any]:
        return {"lr": self.lr, "grad_clip_norm": self.grad_clip_norm}

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

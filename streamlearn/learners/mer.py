"""MER — Meta-Experience Replay (Riemer et al., ICLR 2019, Algorithm 1).

For each incoming example, ``batches_per_example`` times: draw ``replay_batch_size`` examples from
the reservoir, put the current example first, take one SGD step per example *sequentially*, then
move the weights only a fraction ``beta`` of the way (within-batch Reptile). After all batches,
across-batch Reptile with ``gamma``; then the reservoir update. The sequential steps followed by
interpolation approximate a gradient that also maximises the alignment between examples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, cast

import numpy as np
import torch
from torch import nn

from streamlearn.bounds import NonNegativeInt, PositiveFloat, PositiveInt, Range
from streamlearn.learners import device_path
from streamlearn.learners import functional as F_
from streamlearn.learners.base import FastPath, Learner, UpdateStats
from streamlearn.replay import ReservoirBuffer

if TYPE_CHECKING:
    from streamlearn.learners.compiled import CompiledMLP


class MER(Learner):
    """Meta-Experience Replay: sequential SGD over replay batches, then Reptile interpolation.

    Parameters
    ----------
    model, n_classes, device, seed, alignment_every
        As for ``SGD``.
    lr
        Step size of the sequential SGD steps.
    beta
        Within-batch Reptile step: the fraction of the way from the weights before a batch to
        the weights after it that is kept, in (0, 1] (0 would learn nothing).
    gamma
        Across-batch Reptile step, the same fraction over an example's ``batches_per_example``
        batches; 1 keeps the whole move.
    memories
        Capacity of the reservoir buffer (examples).
    replay_batch_size
        Examples drawn from the reservoir for each batch (the incoming example comes first).
    batches_per_example
        Batches learned for each incoming example.
    grad_clip_norm
        Clip each step's gradient to this total L2 norm; None does not clip.
    fast_path
        None: the compiled kernel (numba) where the model is a CPU float32 Linear/ReLU MLP, else the
        numpy kernel, else the reference path; False: always the reference path; True: a kernel or
        a ValueError; "compiled" / "numpy": that kernel or a ValueError. Same maths every way.

    >>> import torch
    >>> from streamlearn.learners.nets import mlp
    >>> learner = MER(mlp(4, 3, hidden=(8,)), n_classes=3, memories=4, batches_per_example=2)
    >>> x, y = torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    >>> for i in range(6):
    ...     _ = learner.learn(x[i : i + 1], y[i : i + 1])
    >>> learner.fast_path, len(learner.buffer), learner.predict_proba(x).shape
    (True, 4, torch.Size([6, 3]))
    """

    name: ClassVar[str] = "mer"
    default_batch_size: ClassVar[int] = 1

    def __init__(
        self,
        model: nn.Module,
        *,
        n_classes: PositiveInt,
        lr: PositiveFloat = 0.1,
        beta: Annotated[float, Range(0, 1, low_open=True)] = 0.01,
        gamma: Annotated[float, Range(0, 1, low_open=True)] = 1.0,
        memories: PositiveInt = 200,
        replay_batch_size: PositiveInt = 10,
        batches_per_example: PositiveInt = 5,
        grad_clip_norm: PositiveFloat | None = None,
        fast_path: FastPath = None,
        device: str = "cpu",
        seed: NonNegativeInt = 0,
        alignment_every: NonNegativeInt = 0,
    ) -> None:
        super().__init__(
            model, n_classes=n_classes, device=device, seed=seed, alignment_every=alignment_every
        )
        self.lr, self.beta, self.gamma = float(lr), float(beta), float(gamma)
        self.memories = int(memories)
        self.replay_batch_size = int(replay_batch_size)
        self.batches_per_example = int(batches_per_example)
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        self.buffer = ReservoirBuffer(self.memories, self.n_inputs, device=self.device, seed=seed)
        self._choose_path(fast_path, needs="a CPU float32 nn.Sequential of Linear/ReLU layers")

    def _learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> UpdateStats:
        assert self.buffer is not None
        if self.path == "compiled":
            return self._learn_compiled(x, y, task)
        if self.path == "device":
            return device_path.mer_learn(self, x, y, task)
        total, steps = 0.0, 0
        batch = self._batch_lean if self._kernel is not None else self._batch_reference
        for i in range(x.shape[0]):
            params = F_.params_of(self.model)
            before = None
            if self.gamma != 1.0:  # gamma = 1 makes the across-batch step the identity
                before = {k: p.detach().clone() for k, p in params.items()}
            for _ in range(self.batches_per_example):
                idx = self.buffer.sample_indices(self.replay_batch_size)
                total += batch(x[i], y[i], idx)
                steps += 1 + len(idx)
            if before is not None:
                with torch.no_grad():
                    for k, p in params.items():
                        p.copy_(before[k] + self.gamma * (p - before[k]))
            self.buffer.add(x[i : i + 1], y[i : i + 1], task)
        return UpdateStats(n=int(x.shape[0]), loss=total / max(steps, 1))

    def _learn_compiled(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> UpdateStats:
        """One compiled call per example for all its batches (and gamma); same draws, same order."""
        assert self.buffer is not None
        kernel = cast("CompiledMLP", self._kernel)
        bank_x, bank_y = self.buffer.x.numpy(), self.buffer.y.numpy()
        xs, ys = x.numpy(), y.numpy()
        total, steps = 0.0, 0
        sample = self.buffer.sample_indices
        for i in range(x.shape[0]):
            k = min(self.replay_batch_size, len(self.buffer))  # what each draw below returns
            idx = np.empty((self.batches_per_example, k), dtype=np.int64)
            for b in range(self.batches_per_example):
                idx[b] = sample(self.replay_batch_size)
            total += kernel.mer_example(
                xs[i], ys[i], bank_x, bank_y, idx, self.lr, self.beta, self.gamma, self.grad_clip_norm
            )
            steps += idx.size + self.batches_per_example
            self.buffer.add(x[i : i + 1], y[i : i + 1], task)
        return UpdateStats(n=int(x.shape[0]), loss=total / max(steps, 1))

    def _batch_lean(self, xi: torch.Tensor, yi: torch.Tensor, idx: np.ndarray) -> float:
        assert self.buffer is not None and self._kernel is not None
        bx = self.buffer.x.numpy()
        by = self.buffer.y.numpy()
        X = np.concatenate([xi.numpy()[None, :], bx[idx]])
        Y = np.concatenate([yi.numpy().reshape(1), by[idx]])
        return self._kernel.mer_batch(X, Y, self.lr, self.beta, self.grad_clip_norm)

    def _batch_reference(self, xi: torch.Tensor, yi: torch.Tensor, idx: np.ndarray) -> float:
        """Plain transcription: autograd per example, in-place SGD, Reptile on all parameters."""
        assert self.buffer is not None
        t_idx = torch.as_tensor(idx, device=self.device)
        X = torch.cat([xi[None, :], self.buffer.x[t_idx]])
        Y = torch.cat([yi.reshape(1), self.buffer.y[t_idx]])
        params = F_.params_of(self.model)
        weights_before = {k: p.detach().clone() for k, p in params.items()}
        total = 0.0
        for j in range(X.shape[0]):
            g, loss = F_.grads(self.model, params, X[j : j + 1], Y[j : j + 1])
            total += loss
            gl = list(g.values())
            F_.clip_(gl, self.grad_clip_norm)
            with torch.no_grad():
                for k, p in params.items():
                    p.sub_(self.lr * g[k])
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(weights_before[k] + self.beta * (p - weights_before[k]))
        return total

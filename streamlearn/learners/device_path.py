"""The device path: MER, La-MAML and C-MAML with every tensor resident on the learner's device.

The reference path (``mer.py``, ``lamaml.py``) is a plain transcription that reads values back to
the host as it goes: each step's loss (``float(loss)``), each clipping decision (``clip_`` compares
the norm in Python), the learning-rate statistics, and index uploads that wait for the device. On a
GPU every such read stalls the queue of kernels. Here an update reads nothing back: losses add up
in a device scalar, clipping always multiplies by ``min(1, max_norm / (norm + 1e-6))`` computed on
the device (exactly what ``torch.nn.utils.clip_grad_norm_`` does; a factor of 1 changes nothing),
parameter updates are ``torch._foreach_*`` calls over the whole parameter list, and the loss and
La-MAML's rate statistics go back in ``UpdateStats.on_device``, which ``Learner.learn`` reads in the
same single transfer as the non-finite guard's extremes (``UpdateUndo.settle``): one sync per update.

What stays on the host is what does not depend on tensor values: the random draws (numpy, the same
streams as the other paths, so the same examples are replayed in the same order) and the buffer's
counters. Their indices go to the device with ``non_blocking=True``, which never waits for the
device. The maths is the reference path's, step for step (tests hold the two to 1e-5 after 200
examples); it works for any module (the CNN too) and for La-MAML's ``second_order``.

On the CPU this path is slower than the numpy kernel for the MLP (autograd costs more than the
kernel's hand-written gradients); it exists for GPUs and larger models. It is the default for a
learner on a non-CPU device and is chosen on the CPU with ``fast_path="device"``. With
``fast_path="cuda_graph"`` each MER example and each La-MAML glance and update is also captured in
a CUDA graph and replayed (``cuda_graphs.py``; opt-in, not yet run on a GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from streamlearn.learners import cuda_graphs
from streamlearn.learners.base import UpdateStats
from streamlearn.replay import ReservoirBuffer


class Replaying(Protocol):
    """What the device path reads of a replaying learner (a protocol, so that ``mer.py`` and
    ``lamaml.py`` can call in here without an import cycle)."""

    model: nn.Module
    device: torch.device
    buffer: ReservoirBuffer | None
    rng: np.random.Generator
    replay_batch_size: int
    grad_clip_norm: float | None
    cuda_graphs: dict[Any, cuda_graphs.Graphed] | None


class MERSettings(Replaying, Protocol):
    lr: float
    beta: float
    gamma: float
    batches_per_example: int


class LaMAMLSettings(Replaying, Protocol):
    alpha: dict[str, torch.Tensor]
    glances: int
    opt_lr: float
    opt_wt: float
    learn_lr: bool
    sync_update: bool
    second_order: bool
    use_old_task_memory: bool
    old_buffer: ReservoirBuffer | None


def upload(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host indices on ``device`` without waiting for the device (the copy is staged at once)."""
    t = torch.from_numpy(a)
    return t if device.type == "cpu" else t.to(device, non_blocking=True)


def clip_(grads: Sequence[torch.Tensor], max_norm: float | None) -> None:
    """``functional.clip_`` without the host read: scale by min(1, max_norm / (norm + 1e-6))."""
    if max_norm is None or not grads:
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(grads))))
    torch._foreach_mul_(list(grads), torch.clamp(max_norm / (total + 1e-6), max=1.0))


def reptile_(params: list[torch.Tensor], before: list[torch.Tensor], fraction: float) -> None:
    """θ ← before + fraction·(θ − before), in place, in the reference path's order of operations."""
    torch._foreach_sub_(params, before)
    torch._foreach_mul_(params, fraction)
    torch._foreach_add_(params, before)


# -- MER ----------------------------------------------------------------------------------------
def mer_learn(learner: MERSettings, x: torch.Tensor, y: torch.Tensor, task: int | None) -> UpdateStats:
    """``MER._learn``: per example, its batches of sequential SGD steps and the two Reptile moves."""
    buffer = learner.buffer
    assert buffer is not None
    # what a captured update changes in place (buffers too: a CUDA graph's warm-up must be undone)
    state = [*learner.model.parameters(), *learner.model.buffers()]
    n_batches = learner.batches_per_example
    loss_sum = torch.zeros((), device=learner.device)
    steps = 0
    for i in range(x.shape[0]):
        # All of an example's draws at once, in the reference path's order (one upload).
        draws = np.stack([buffer.sample_indices(learner.replay_batch_size) for _ in range(n_batches)])
        on_device = upload(draws, learner.device)
        # (batches, 1 + k, ...): each batch is the incoming example, then its replay draw
        bx = torch.cat([x[i].expand(n_batches, 1, -1), buffer.x[on_device]], dim=1)
        by = torch.cat([y[i].expand(n_batches, 1), buffer.y[on_device]], dim=1)
        example = partial(_mer_example, learner)
        loss_sum += cuda_graphs.run(learner.cuda_graphs, "mer", example, (bx, by), state)
        steps += bx.shape[0] * bx.shape[1]
        buffer.add(x[i : i + 1], y[i : i + 1], task)
    return UpdateStats(n=int(x.shape[0]), loss=0.0, on_device={"loss": loss_sum / max(steps, 1)})


@torch.no_grad()
def _mer_example(learner: MERSettings, bx: torch.Tensor, by: torch.Tensor) -> torch.Tensor:
    """One example's batches ``bx`` (batches, 1 + k, n_inputs), in place; the sum of their losses."""
    model = learner.model
    params: list[torch.Tensor] = list(model.parameters())
    total = torch.zeros((), device=bx.device)
    example_start = [p.clone() for p in params] if learner.gamma != 1.0 else None
    for b in range(bx.shape[0]):
        batch_start = [p.clone() for p in params]
        for j in range(bx.shape[1]):
            with torch.enable_grad():
                loss = F.cross_entropy(model(bx[b, j : j + 1]), by[b, j : j + 1])
                grads = list(torch.autograd.grad(loss, params))
            total += loss
            clip_(grads, learner.grad_clip_norm)
            torch._foreach_sub_(params, list(torch._foreach_mul(grads, learner.lr)))
        reptile_(params, batch_start, learner.beta)
    if example_start is not None:
        reptile_(params, example_start, learner.gamma)
    return total


# -- La-MAML and C-MAML -------------------------------------------------------------------------
def lamaml_learn(learner: LaMAMLSettings, x: torch.Tensor, y: torch.Tensor, task: int | None) -> UpdateStats:
    """``LaMAML._learn`` after the task switch: ``glances`` reshuffles, each a glance and its update."""
    assert learner.buffer is not None
    state = [*learner.model.parameters(), *learner.model.buffers(), *learner.alpha.values()]
    total = torch.zeros((), device=learner.device)
    for glance in range(learner.glances):
        perm = upload(learner.rng.permutation(x.shape[0]), learner.device)
        x, y = x[perm], y[perm]
        old = learner.old_buffer if learner.use_old_task_memory else None
        memory = old if old is not None else learner.buffer
        idx = upload(memory.sample_indices(learner.replay_batch_size), learner.device)
        bx = torch.cat([memory.x[idx], x])
        by = torch.cat([memory.y[idx], y])
        update = partial(_glance_and_update, learner)
        total += cuda_graphs.run(learner.cuda_graphs, "lamaml", update, (x, y, bx, by), state)
        if glance == 0:
            # The reference adds each example right after its inner step; the meta batch was copied
            # before the glance, so adding them all after it changes nothing.
            learner.buffer.add(x, y, task)
    with torch.no_grad():
        rates = torch.relu(torch.cat([a.reshape(-1) for a in learner.alpha.values()]))
        on_device = {
            "loss": total / learner.glances,
            "mean": rates.mean(),
            "min": rates.min(),
            "max": rates.max(),
        }
    return UpdateStats(n=int(x.shape[0]), loss=0.0, on_device=on_device)


def _glance_and_update(
    learner: LaMAMLSettings, x: torch.Tensor, y: torch.Tensor, bx: torch.Tensor, by: torch.Tensor
) -> torch.Tensor:
    """One glance at the current θ and α, then their update; the glance's mean meta-loss.

    ``LaMAML._glance_reference`` with the meta-loss left on the device; fixed rates (C-MAML,
    ``learn_lr`` False) never use the α-gradients, so they are not asked for.
    """
    model, alpha = learner.model, learner.alpha
    theta: dict[str, torch.Tensor] = dict(model.named_parameters())
    names = list(theta)
    adapted = dict(theta)  # θ', after the inner steps so far
    second = learner.second_order
    losses = []
    for s in range(x.shape[0]):
        inner = F.cross_entropy(functional_call(model, adapted, (x[s : s + 1],)), y[s : s + 1])
        g = torch.autograd.grad(inner, [adapted[k] for k in names], create_graph=second, retain_graph=second)
        adapted = {k: adapted[k] - gk * torch.relu(alpha[k]) for k, gk in zip(names, g, strict=True)}
        losses.append(F.cross_entropy(functional_call(model, adapted, (bx,)), by))
    meta = torch.stack(losses).mean()
    wrt = [theta[k] for k in names] + ([alpha[k] for k in names] if learner.learn_lr else [])
    out = torch.autograd.grad(meta, wrt)
    n = len(names)
    _apply(learner, [t.detach() for t in out[:n]], [t.detach() for t in out[n:]])
    return meta.detach()


@torch.no_grad()
def _apply(learner: LaMAMLSettings, g_theta: list[torch.Tensor], g_alpha: list[torch.Tensor]) -> None:
    """``LaMAML._apply``: α by SGD with ``opt_lr``, then θ by relu(α)·g or by SGD with ``opt_wt``."""
    clip_(g_theta, learner.grad_clip_norm)
    alphas = list(learner.alpha.values())
    if learner.learn_lr:
        clip_(g_alpha, learner.grad_clip_norm)
        torch._foreach_sub_(alphas, list(torch._foreach_mul(g_alpha, learner.opt_lr)))
    params: list[torch.Tensor] = list(learner.model.parameters())
    if learner.sync_update:
        torch._foreach_sub_(params, list(torch._foreach_mul(g_theta, learner.opt_wt)))
    else:
        # the step sizes are the just-updated learning rates, clipped at zero
        torch._foreach_sub_(params, list(torch._foreach_mul(g_theta, torch._foreach_clamp_min(alphas, 0.0))))

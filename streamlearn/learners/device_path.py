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
learner on a non-CPU device and is chosen on the CPU with ``fast_path="device"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

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
    model = learner.model
    params: list[torch.Tensor] = list(model.parameters())
    loss_sum = torch.zeros((), device=learner.device)
    steps = 0
    with torch.no_grad():
        for i in range(x.shape[0]):
            # All of an example's draws at once, in the reference path's order (one upload).
            draws = np.stack(
                [buffer.sample_indices(learner.replay_batch_size) for _ in range(learner.batches_per_example)]
            )
            on_device = upload(draws, learner.device)
            replay_x, replay_y = buffer.x[on_device], buffer.y[on_device]  # (batches, k, ...)
            example_start = [p.clone() for p in params] if learner.gamma != 1.0 else None
            for b in range(learner.batches_per_example):
                batch_start = [p.clone() for p in params]
                bx = torch.cat([x[i : i + 1], replay_x[b]])
                by = torch.cat([y[i : i + 1], replay_y[b]])
                for j in range(bx.shape[0]):
                    with torch.enable_grad():
                        loss = F.cross_entropy(model(bx[j : j + 1]), by[j : j + 1])
                        grads = list(torch.autograd.grad(loss, params))
                    loss_sum += loss
                    clip_(grads, learner.grad_clip_norm)
                    torch._foreach_sub_(params, list(torch._foreach_mul(grads, learner.lr)))
                steps += bx.shape[0]
                reptile_(params, batch_start, learner.beta)
            if example_start is not None:
                reptile_(params, example_start, learner.gamma)
            buffer.add(x[i : i + 1], y[i : i + 1], task)
    return UpdateStats(n=int(x.shape[0]), loss=0.0, on_device={"loss": loss_sum / max(steps, 1)})


# -- La-MAML and C-MAML -------------------------------------------------------------------------
def lamaml_learn(learner: LaMAMLSettings, x: torch.Tensor, y: torch.Tensor, task: int | None) -> UpdateStats:
    """``LaMAML._learn`` after the task switch: ``glances`` reshuffles, each a glance and its update."""
    assert learner.buffer is not None
    total = torch.zeros((), device=learner.device)
    for glance in range(learner.glances):
        perm = upload(learner.rng.permutation(x.shape[0]), learner.device)
        x, y = x[perm], y[perm]
        old = learner.old_buffer if learner.use_old_task_memory else None
        memory = old if old is not None else learner.buffer
        idx = upload(memory.sample_indices(learner.replay_batch_size), learner.device)
        bx = torch.cat([memory.x[idx], x])
        by = torch.cat([memory.y[idx], y])
        meta, g_theta, g_alpha = _glance(learner, x, y, bx, by)
        if glance == 0:
            # The reference adds each example right after its inner step; the meta batch was copied
            # before the glance, so adding them all after it changes nothing.
            learner.buffer.add(x, y, task)
        _apply(learner, g_theta, g_alpha)
        total += meta
    with torch.no_grad():
        rates = torch.relu(torch.cat([a.reshape(-1) for a in learner.alpha.values()]))
        on_device = {
            "loss": total / learner.glances,
            "mean": rates.mean(),
            "min": rates.min(),
            "max": rates.max(),
        }
    return UpdateStats(n=int(x.shape[0]), loss=0.0, on_device=on_device)


def _glance(
    learner: LaMAMLSettings, x: torch.Tensor, y: torch.Tensor, bx: torch.Tensor, by: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """``LaMAML._glance_reference`` with the mean meta-loss left on the device.

    Fixed rates (C-MAML, ``learn_lr`` False) never use the α-gradients, so they are not asked for.
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
    return meta.detach(), [t.detach() for t in out[:n]], [t.detach() for t in out[n:]]


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

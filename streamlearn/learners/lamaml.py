"""La-MAML — Look-ahead MAML (Gupta et al., NeurIPS 2020) and its fixed-rate sibling C-MAML.

Per incoming batch, ``glances`` times (the batch reshuffled each time): sequential inner SGD steps
on each current example with per-parameter learnable learning rates α (adapted weights
``θ' = θ − relu(α)·g``); after each inner step, the meta-loss of the adapted weights on replay +
current batch; the meta-losses are averaged. Then α takes an SGD step (``opt_lr``) and θ moves by
``θ − relu(α)·∇θ`` (asynchronous, the default) or by SGD with ``opt_wt`` (``sync_update``).
Meta-gradients are clipped to ``grad_clip_norm`` (θ and α separately), as in the authors' code.
First-order by default; ``second_order`` differentiates through the inner steps.

The reservoir is filled during the first glance only, right after each example's inner step.
With ``use_old_task_memory`` and task ids in the stream, the meta-loss draws from the buffer as
it stood at the last task switch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from streamlearn.bounds import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from streamlearn.learners import device_path
from streamlearn.learners import functional as F_
from streamlearn.learners.base import FastPath, Learner, UpdateStats
from streamlearn.replay import ReservoirBuffer

if TYPE_CHECKING:
    from streamlearn.learners.compiled import CompiledMLP

#: One glance's mean meta-loss and its gradients w.r.t. θ and α (model.parameters() order).
Glance = tuple[float, list[torch.Tensor], list[torch.Tensor]]


class LaMAML(Learner):
    """La-MAML: look-ahead meta-learning with learned per-parameter learning rates α.

    Parameters
    ----------
    model, n_classes, device, seed, alignment_every
        As for ``SGD``.
    memories
        Capacity of the reservoir buffer (examples).
    replay_batch_size
        Examples drawn from the reservoir into each glance's meta batch.
    glances
        Meta-updates on each incoming micro-batch, reshuffled each time.
    alpha_init
        Initial inner learning rate of every parameter entry (0 would learn nothing: relu(0) = 0
        and its gradient too).
    opt_lr
        Step size of the SGD step on α (0 keeps the rates fixed).
    opt_wt
        Step size of the SGD step on θ with ``sync_update``.
    learn_lr
        Learn α; False keeps the initial rates.
    sync_update
        Move θ by SGD with ``opt_wt`` instead of by the just-updated rates relu(α).
    second_order
        Differentiate through the inner steps (autograd; no numpy kernel).
    grad_clip_norm
        Clip the meta-gradients of θ and of α, each to this total L2 norm; None does not clip.
    use_old_task_memory
        With task ids in the stream, draw the meta batch from the buffer as it stood at the last
        task switch.
    fast_path
        As for ``MER``; the kernel runs first-order updates only.

    >>> import torch
    >>> from streamlearn.learners.nets import mlp
    >>> learner = LaMAML(mlp(4, 3, hidden=(8,)), n_classes=3, memories=8, glances=2)
    >>> x, y = torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    >>> stats = learner.learn(x, y)
    >>> learner.fast_path, len(learner.buffer), learner.predict_proba(x).shape
    (True, 6, torch.Size([6, 3]))
    >>> stats.lr_stats["min"] <= stats.lr_stats["mean"] <= stats.lr_stats["max"]
    True
    """

    name: ClassVar[str] = "lamaml"
    default_batch_size: ClassVar[int] = 10

    def __init__(
        self,
        model: nn.Module,
        *,
        n_classes: PositiveInt,
        memories: PositiveInt = 200,
        replay_batch_size: PositiveInt = 10,
        glances: PositiveInt = 5,
        alpha_init: PositiveFloat = 0.15,
        opt_lr: NonNegativeFloat = 0.3,
        opt_wt: PositiveFloat = 0.1,
        learn_lr: bool = True,
        sync_update: bool = False,
        second_order: bool = False,
        grad_clip_norm: PositiveFloat | None = 2.0,
        use_old_task_memory: bool = False,
        fast_path: FastPath = None,
        device: str = "cpu",
        seed: NonNegativeInt = 0,
        alignment_every: NonNegativeInt = 0,
    ) -> None:
        super().__init__(
            model, n_classes=n_classes, device=device, seed=seed, alignment_every=alignment_every
        )
        self.memories = int(memories)
        self.replay_batch_size = int(replay_batch_size)
        self.glances = int(glances)
        self.alpha_init = float(alpha_init)
        self.opt_lr = float(opt_lr)
        self.opt_wt = float(opt_wt)
        self.learn_lr = bool(learn_lr)
        self.sync_update = bool(sync_update)
        self.second_order = bool(second_order)
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        self.use_old_task_memory = bool(use_old_task_memory)
        self.buffer = ReservoirBuffer(self.memories, self.n_inputs, device=self.device, seed=seed)
        self.old_buffer: ReservoirBuffer | None = None
        self.current_task: int | None = None
        # One learnable learning rate per parameter entry (Meta-SGD style).
        self.alpha = {
            k: torch.full_like(p, self.alpha_init).detach().requires_grad_(True)
            for k, p in F_.params_of(self.model).items()
        }
        self._choose_path(
            fast_path,
            needs="first-order updates and a CPU float32 Linear/ReLU MLP",
            possible=not self.second_order,
        )

    # -- the update ---------------------------------------------------------------------------
    def _learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> UpdateStats:
        if task is not None and task != self.current_task:
            if self.current_task is not None and self.use_old_task_memory:
                assert self.buffer is not None
                self.old_buffer = self.buffer.copy()
            self.current_task = task
        if self.path == "compiled":
            return self._learn_compiled(x, y, task)
        if self.path == "device":
            return device_path.lamaml_learn(self, x, y, task)
        total = 0.0
        for glance in range(self.glances):
            perm = torch.as_tensor(self.rng.permutation(x.shape[0]), device=self.device)
            x, y = x[perm], y[perm]
            memory = (
                self.old_buffer if (self.use_old_task_memory and self.old_buffer is not None) else self.buffer
            )
            assert memory is not None
            idx = torch.as_tensor(memory.sample_indices(self.replay_batch_size), device=self.device)
            bx = torch.cat([memory.x[idx], x])
            by = torch.cat([memory.y[idx], y])
            # The reservoir takes each current example right after its inner step, first glance only.
            after_inner_step = self._remember(x, y, task) if glance == 0 else None
            meta_loss, g_theta, g_alpha = self._glance(x, y, bx, by, after_inner_step)
            self._apply(g_theta, g_alpha)
            total += meta_loss
        return UpdateStats(n=int(x.shape[0]), loss=total / self.glances, lr_stats=self.lr_stats())

    def _learn_compiled(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> UpdateStats:
        """``_learn`` with each glance and its update as one compiled call; same draws, same order.

        The reservoir takes the current examples after the call: the glance's meta batch was drawn
        (and copied) before, so the order of adds and inner steps changes nothing.
        """
        assert self.buffer is not None
        kernel = cast("CompiledMLP", self._kernel)
        alphas = [a.detach().numpy() for a in self.alpha.values()]
        alpha_W, alpha_b = tuple(alphas[0::2]), tuple(alphas[1::2])
        memory = (
            self.old_buffer if (self.use_old_task_memory and self.old_buffer is not None) else self.buffer
        )
        bank_x, bank_y = memory.x.numpy(), memory.y.numpy()
        xs, ys = x.numpy(), y.numpy()
        total = 0.0
        for glance in range(self.glances):
            perm = self.rng.permutation(xs.shape[0])
            xs, ys = xs[perm], ys[perm]
            idx = memory.sample_indices(self.replay_batch_size)
            bx = np.concatenate([bank_x[idx], xs])
            by = np.concatenate([bank_y[idx], ys])
            total += kernel.lamaml_update(
                xs,
                ys,
                bx,
                by,
                alpha_W,
                alpha_b,
                learn_lr=self.learn_lr,
                opt_lr=self.opt_lr,
                opt_wt=self.opt_wt,
                sync_update=self.sync_update,
                max_norm=self.grad_clip_norm,
            )
            if glance == 0:
                self.buffer.add(torch.from_numpy(xs), torch.from_numpy(ys), task)
        return UpdateStats(
            n=int(x.shape[0]), loss=total / self.glances, lr_stats=kernel.lr_stats(alpha_W, alpha_b)
        )

    def _remember(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> Callable[[int], None]:
        def add(s: int) -> None:
            assert self.buffer is not None
            self.buffer.add(x[s : s + 1].detach(), y[s : s + 1], task)

        return add

    def _glance(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        bx: torch.Tensor,
        by: torch.Tensor,
        after_inner_step: Callable[[int], None] | None = None,
    ) -> Glance:
        """One glance at the current θ and α, changing neither: the mean meta-loss and its gradients.

        ``x, y`` are the current examples (inner steps, in order), ``bx, by`` the meta batch;
        ``after_inner_step(s)`` runs after the inner step on example s.
        """
        if self._kernel is not None:
            return self._glance_lean(x, y, bx, by, after_inner_step)
        return self._glance_reference(x, y, bx, by, after_inner_step)

    def _glance_reference(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        bx: torch.Tensor,
        by: torch.Tensor,
        after_inner_step: Callable[[int], None] | None,
    ) -> Glance:
        """Plain transcription with autograd through functional_call; works for any module/device."""
        theta = F_.params_of(self.model)
        names = list(theta)
        adapted: dict[str, torch.Tensor] = dict(theta)  # θ', after the inner steps so far
        losses = []
        for s in range(x.shape[0]):
            inner = F.cross_entropy(functional_call(self.model, adapted, (x[s : s + 1],)), y[s : s + 1])
            # Only the adapted weights are inputs, so first-order grads stop there and keep the graph
            # from θ, α to the adapted weights alive for the meta-loss.
            g = torch.autograd.grad(
                inner,
                [adapted[k] for k in names],
                create_graph=self.second_order,
                retain_graph=self.second_order,
            )
            adapted = {k: adapted[k] - gk * torch.relu(self.alpha[k]) for k, gk in zip(names, g, strict=True)}
            if after_inner_step is not None:
                after_inner_step(s)
            losses.append(F.cross_entropy(functional_call(self.model, adapted, (bx,)), by))
        meta = torch.stack(losses).mean()
        out = torch.autograd.grad(meta, [theta[k] for k in names] + [self.alpha[k] for k in names])
        n = len(names)
        return float(meta.detach()), [t.detach() for t in out[:n]], [t.detach() for t in out[n:]]

    def _glance_lean(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        bx: torch.Tensor,
        by: torch.Tensor,
        after_inner_step: Callable[[int], None] | None,
    ) -> Glance:
        assert self._kernel is not None
        alphas = [a.detach().numpy() for a in self.alpha.values()]
        # fixed rates (C-MAML) never use the α-gradients: don't compute them
        if self.path == "compiled":
            kernel = cast("CompiledMLP", self._kernel)
            meta, gW, gb, aW, ab = kernel.lamaml_glance_compiled(
                x.numpy(), y.numpy(), bx.numpy(), by.numpy(), alphas[0::2], alphas[1::2], self.learn_lr
            )
            for s in range(x.shape[0] if after_inner_step is not None else 0):
                after_inner_step(s)  # type: ignore[misc]
        else:
            meta, gW, gb, aW, ab = self._kernel.lamaml_glance(
                x.numpy(),
                y.numpy(),
                bx.numpy(),
                by.numpy(),
                alphas[0::2],
                alphas[1::2],
                after_inner_step,
                self.learn_lr,
            )
        g_theta = [torch.from_numpy(a) for pair in zip(gW, gb, strict=True) for a in pair]
        g_alpha = [torch.from_numpy(a) for pair in zip(aW, ab, strict=True) for a in pair]
        return meta, g_theta, g_alpha

    @torch.no_grad()
    def _apply(self, g_theta: list[torch.Tensor], g_alpha: list[torch.Tensor]) -> None:
        F_.clip_(g_theta, self.grad_clip_norm)
        F_.clip_(g_alpha, self.grad_clip_norm)
        alphas = list(self.alpha.values())
        if self.learn_lr:
            for a, ga in zip(alphas, g_alpha, strict=True):
                a.sub_(self.opt_lr * ga)
        for p, a, gp in zip(F_.params_of(self.model).values(), alphas, g_theta, strict=True):
            if self.sync_update:
                p.sub_(self.opt_wt * gp)
            else:
                # the step sizes are the just-updated learning rates, clipped at zero
                p.sub_(gp * torch.relu(a))

    # -- reporting and state ------------------------------------------------------------------
    @torch.no_grad()
    def lr_stats(self) -> dict[str, float]:
        flat = torch.relu(torch.cat([a.reshape(-1) for a in self.alpha.values()]))
        return {"mean": float(flat.mean()), "min": float(flat.min()), "max": float(flat.max())}

    def _learned_tensors(self) -> list[torch.Tensor]:
        return [*super()._learned_tensors(), *self.alpha.values()]

    def _mark_extra(self) -> Any:
        # A task switch inside an undone update must be undone too; the old buffer is replaced
        # at a switch, never changed, so keeping the reference is enough.
        return (self.current_task, self.old_buffer)

    def _undo_extra(self, saved: Any) -> None:
        self.current_task, self.old_buffer = saved

    def _extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "alpha": {k: a.detach().cpu().clone() for k, a in self.alpha.items()},
            "current_task": self.current_task,
        }
        if self.old_buffer is not None:
            state["old_buffer"] = self.old_buffer.state_dict()
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for k, a in self.alpha.items():
                a.copy_(state["alpha"][k])
        self.current_task = state["current_task"]
        self.old_buffer = None
        if "old_buffer" in state:
            assert self.buffer is not None
            old = ReservoirBuffer(self.memories, self.n_inputs, device=self.device)
            old.load_state_dict(state["old_buffer"])
            old.rng = self.buffer.rng  # a snapshot draws from the live buffer's stream
            self.old_buffer = old


class CMAML(LaMAML):
    """C-MAML: La-MAML's look-ahead meta-update with fixed inner learning rates and SGD on θ.

    Parameters
    ----------
    alpha_init
        The fixed inner learning rate of every parameter entry (0 would make the look-ahead a
        plain replay step).
    opt_wt
        Step size of the SGD step on θ.
    others
        As for ``LaMAML``; ``opt_lr``, ``learn_lr`` and ``sync_update`` are fixed (0, False, True).

    >>> import torch
    >>> from streamlearn.learners.nets import mlp
    >>> learner = CMAML(mlp(4, 3, hidden=(8,)), n_classes=3, memories=8, glances=2)
    >>> x, y = torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    >>> stats = learner.learn(x, y)
    >>> {k: round(v, 6) for k, v in stats.lr_stats.items()}  # the rates stay where they start
    {'mean': 0.1, 'min': 0.1, 'max': 0.1}
    >>> sorted(learner.hparams())[:3]
    ['alpha_init', 'glances', 'grad_clip_norm']
    """

    name: ClassVar[str] = "cmaml"

    def __init__(
        self,
        model: nn.Module,
        *,
        n_classes: PositiveInt,
        memories: PositiveInt = 200,
        replay_batch_size: PositiveInt = 10,
        glances: PositiveInt = 5,
        alpha_init: PositiveFloat = 0.1,
        opt_wt: PositiveFloat = 0.1,
        second_order: bool = False,
        grad_clip_norm: PositiveFloat | None = 2.0,
        use_old_task_memory: bool = False,
        fast_path: FastPath = None,
        device: str = "cpu",
        seed: NonNegativeInt = 0,
        alignment_every: NonNegativeInt = 0,
    ) -> None:
        super().__init__(
            model,
            n_classes=n_classes,
            memories=memories,
            replay_batch_size=replay_batch_size,
            glances=glances,
            alpha_init=alpha_init,
            opt_lr=0.0,
            opt_wt=opt_wt,
            learn_lr=False,
            sync_update=True,
            second_order=second_order,
            grad_clip_norm=grad_clip_norm,
            use_old_task_memory=use_old_task_memory,
            fast_path=fast_path,
            device=device,
            seed=seed,
            alignment_every=alignment_every,
        )

"""La-MAML — Look-ahead MAML (Gupta et al., NeurIPS 2020) and its fixed-rate sibling C-MAML.

Per incoming batch, ``glances`` times (the batch reshuffled each time): sequential inner SGD steps
on each current example with per-parameter learnable learning rates α (fast weights
``θ − relu(α)·g``); after each inner step, the meta-loss of the fast weights on replay + current
batch; the meta-losses are averaged. Then α takes an SGD step (``opt_lr``) and θ moves by
``θ − relu(α)·∇θ`` (asynchronous, the default) or by SGD with ``opt_wt`` (``sync_update``).
Meta-gradients are clipped to ``grad_clip_norm`` (θ and α separately), as in the authors' code.
First-order by default; ``second_order`` differentiates through the inner steps.

The reservoir is filled during the first glance only, right after each example's inner step.
With ``use_old_task_memory`` and task ids in the stream, the meta-loss draws from the buffer as
it stood at the last task switch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from streamlearn.learners import functional as F_
from streamlearn.learners.base import Learner, UpdateStats
from streamlearn.learners.kernels import NumpyMLP
from streamlearn.replay import ReservoirBuffer


class LaMAML(Learner):
    name: ClassVar[str] = "lamaml"
    default_batch_size: ClassVar[int] = 10

    def __init__(
        self,
        model: nn.Module,
        *,
        n_classes: int,
        memories: int = 200,
        replay_batch_size: int = 10,
        glances: int = 5,
        alpha_init: float = 0.15,
        opt_lr: float = 0.3,
        opt_wt: float = 0.1,
        learn_lr: bool = True,
        sync_update: bool = False,
        second_order: bool = False,
        grad_clip_norm: float | None = 2.0,
        use_old_task_memory: bool = False,
        fast_path: bool | None = None,
        device: str = "cpu",
        seed: int = 0,
        alignment_every: int = 0,
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
        kernel = None
        if fast_path is not False and not self.second_order:
            kernel = NumpyMLP.from_module(self.model)
        if fast_path and kernel is None:
            raise ValueError("fast_path=True needs first-order updates and a CPU float32 Linear/ReLU MLP")
        self._kernel = kernel
        self.fast_path = kernel is not None

    def hparams(self) -> dict[str, Any]:
        return {
            "memories": self.memories,
            "replay_batch_size": self.replay_batch_size,
            "glances": self.glances,
            "alpha_init": self.alpha_init,
            "opt_lr": self.opt_lr,
            "opt_wt": self.opt_wt,
            "learn_lr": self.learn_lr,
            "sync_update": self.sync_update,
            "second_order": self.second_order,
            "grad_clip_norm": self.grad_clip_norm,
            "use_old_task_memory": self.use_old_task_memory,
        }

    # -- the update ---------------------------------------------------------------------------
    def _learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> UpdateStats:
        if task is not None and task != self.current_task:
            if self.current_task is not None and self.use_old_task_memory:
                assert self.buffer is not None
                self.old_buffer = self.buffer.copy()
            self.current_task = task
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
            if self._kernel is not None:
                meta_loss, g_theta, g_alpha = self._glance_fast(x, y, bx, by, task, glance == 0)
            else:
                meta_loss, g_theta, g_alpha = self._glance_reference(x, y, bx, by, task, glance == 0)
            self._apply(g_theta, g_alpha)
            total += meta_loss
        return UpdateStats(n=int(x.shape[0]), loss=total / self.glances, lr_stats=self.lr_stats())

    def meta_gradients(
        self, x: torch.Tensor, y: torch.Tensor, bx: torch.Tensor, by: torch.Tensor
    ) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
        """One glance's mean meta-loss and its gradients w.r.t. θ and α, changing nothing.

        ``x, y`` are the current examples (inner steps, in order), ``bx, by`` the meta batch.
        """
        if self._kernel is not None:
            return self._glance_fast(x, y, bx, by, None, push=False, alpha_grads=True)
        return self._glance_reference(x, y, bx, by, None, push=False)

    def _push(self, x: torch.Tensor, y: torch.Tensor, task: int | None, push: bool) -> None:
        if push:
            assert self.buffer is not None
            self.buffer.add(x, y, task)

    def _glance_reference(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        bx: torch.Tensor,
        by: torch.Tensor,
        task: int | None,
        push: bool,
    ) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
        """Plain transcription with autograd through functional_call; works for any module/device."""
        theta = F_.params_of(self.model)
        names = list(theta)
        fast: dict[str, torch.Tensor] = dict(theta)
        losses = []
        for s in range(x.shape[0]):
            inner = F.cross_entropy(functional_call(self.model, fast, (x[s : s + 1],)), y[s : s + 1])
            # Only the fast weights are inputs, so first-order grads stop there and keep the graph
            # from θ, α to the fast weights alive for the meta-loss.
            g = torch.autograd.grad(
                inner,
                [fast[k] for k in names],
                create_graph=self.second_order,
                retain_graph=self.second_order,
            )
            fast = {k: fast[k] - gk * torch.relu(self.alpha[k]) for k, gk in zip(names, g, strict=True)}
            self._push(x[s : s + 1].detach(), y[s : s + 1], task, push)
            losses.append(F.cross_entropy(functional_call(self.model, fast, (bx,)), by))
        meta = torch.stack(losses).mean()
        out = torch.autograd.grad(meta, [theta[k] for k in names] + [self.alpha[k] for k in names])
        n = len(names)
        return float(meta.detach()), [t.detach() for t in out[:n]], [t.detach() for t in out[n:]]

    def _glance_fast(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        bx: torch.Tensor,
        by: torch.Tensor,
        task: int | None,
        push: bool,
        alpha_grads: bool | None = None,
    ) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
        assert self._kernel is not None
        alphas = [a.detach().numpy() for a in self.alpha.values()]
        xs, ys = x.numpy(), y.numpy()

        def after_inner_step(s: int) -> None:
            self._push(x[s : s + 1], y[s : s + 1], task, push)

        # fixed rates (C-MAML) never use the α-gradients: don't compute them
        want_alpha = self.learn_lr if alpha_grads is None else alpha_grads
        meta, gW, gb, aW, ab = self._kernel.lamaml_glance(
            xs, ys, bx.numpy(), by.numpy(), alphas[0::2], alphas[1::2], after_inner_step, want_alpha
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
    """C-MAML: La-MAML's look-ahead meta-update with fixed inner learning rates and SGD on θ."""

    name: ClassVar[str] = "cmaml"

    def __init__(
        self,
        model: nn.Module,
        *,
        n_classes: int,
        memories: int = 200,
        replay_batch_size: int = 10,
        glances: int = 5,
        alpha_init: float = 0.1,
        opt_wt: float = 0.1,
        second_order: bool = False,
        grad_clip_norm: float | None = 2.0,
        use_old_task_memory: bool = False,
        fast_path: bool | None = None,
        device: str = "cpu",
        seed: int = 0,
        alignment_every: int = 0,
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

    def hparams(self) -> dict[str, Any]:
        h = super().hparams()
        for k in ("opt_lr", "learn_lr", "sync_update"):
            h.pop(k)
        return h

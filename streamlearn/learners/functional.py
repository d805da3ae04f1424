"""Functional helpers: any ``nn.Module`` as a pure function of a dict of parameter tensors.

The module itself is never mutated by these (``torch.func.functional_call``), which is what lets
La-MAML hold its adapted weights θ' (the inner loop's) without copying the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]


def infer_n_inputs(model: nn.Module) -> int:
    """The input width of a model whose first parametrised layer is Linear or a Conv on flat input."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            return int(m.in_features)
        if isinstance(m, nn.Unflatten):
            size = 1
            for s in m.unflattened_size:
                size *= int(s)
            return size
    raise ValueError("cannot infer the input width: the model has no Linear layer or leading Unflatten")


def params_of(model: nn.Module) -> Params:
    """The model's parameters by name (the live tensors, not copies)."""
    return dict(model.named_parameters())


def loss_fn(model: nn.Module) -> Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean cross-entropy of ``model`` evaluated at ``params``."""

    def loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    return loss


def grads(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[Params, float]:
    """Gradient of the mean cross-entropy at ``params`` (detached), and the loss value."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    loss = F.cross_entropy(functional_call(model, leaves, (x,)), y)
    g = torch.autograd.grad(loss, list(leaves.values()))
    return dict(zip(leaves.keys(), g, strict=True)), float(loss.detach())


def flat(tensors: Params) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def gradient_alignment(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, xr: torch.Tensor, yr: torch.Tensor
) -> tuple[float, float]:
    """Cosine and dot product between the gradient on (x, y) and on the replay sample (xr, yr).

    This is the quantity MER and La-MAML try to raise: positive means that learning the new data
    also helps on the old.
    """
    params = {k: v.detach() for k, v in params_of(model).items()}
    g_new, _ = grads(model, params, x, y)
    g_old, _ = grads(model, params, xr, yr)
    a, b = flat(g_new), flat(g_old)
    dot = float(a @ b)
    cos = float(F.cosine_similarity(a, b, dim=0, eps=1e-12))
    return cos, dot


def clip_coef(total_norm: float, max_norm: float | None) -> float:
    """The scale ``torch.nn.utils.clip_grad_norm_`` applies for a given total norm."""
    if max_norm is None:
        return 1.0
    return min(1.0, max_norm / (total_norm + 1e-6))


def clip_(tensors: list[torch.Tensor], max_norm: float | None) -> None:
    """Scale gradients in place to total L2 norm ``max_norm`` (same rule as torch's clip_grad_norm_)."""
    if max_norm is None:
        return
    total = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors])))
    c = clip_coef(total, max_norm)
    if c < 1.0:
        for t in tensors:
            t.mul_(c)

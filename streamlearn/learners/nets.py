"""Model factories. Any ``torch.nn.Module`` mapping (batch, n_inputs) to logits works with every
learner; these two are the ones the benchmarks and the example configs use."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _kaiming(module: nn.Module, generator: torch.Generator) -> None:
    # Kaiming-normal weights and zero biases: the initialisation of the authors' MER/La-MAML
    # networks, which their MNIST hyper-parameters (lr 0.1, alpha 0.15, ...) were tuned for.
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def mlp(
    n_inputs: int = 784, n_classes: int = 10, hidden: Sequence[int] = (100, 100), seed: int = 0
) -> nn.Sequential:
    """Fully connected ReLU network, e.g. the 784-100-100-10 MLP of the MNIST benchmarks.

    >>> mlp(4, 3, hidden=(5,))(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """
    sizes = [n_inputs, *hidden, n_classes]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers)
    _kaiming(net, torch.Generator().manual_seed(seed))
    return net


def small_cnn(
    image_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10, channels: int = 16, seed: int = 0
) -> nn.Sequential:
    """Two conv blocks and a linear head, taking *flattened* images like every other learner input.

    >>> small_cnn((1, 8, 8), 3, channels=4)(torch.zeros(2, 64)).shape
    torch.Size([2, 3])
    """
    c, h, w = image_shape
    net = nn.Sequential(
        nn.Unflatten(1, image_shape),
        nn.Conv2d(c, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(channels * (h // 4) * (w // 4), n_classes),
    )
    _kaiming(net, torch.Generator().manual_seed(seed))
    return net


def build_model(
    kind: str, n_inputs: int, n_classes: int, hidden: Sequence[int] = (100, 100), seed: int = 0
) -> nn.Module:
    """The factory behind the ``model`` config section."""
    if kind == "mlp":
        return mlp(n_inputs, n_classes, hidden, seed=seed)
    if kind == "cnn":
        side = round(n_inputs**0.5)
        if side * side != n_inputs:
            raise ValueError(f"cnn needs square single-channel images; n_inputs={n_inputs} is not a square")
        return small_cnn((1, side, side), n_classes, seed=seed)
    raise ValueError(f"unknown model kind {kind!r}; expected 'mlp' or 'cnn'")

"""What the path-equality tests share: the settings each path is held to the reference on, and the data."""

import torch
from torch import nn

from streamlearn.learners import Learner, make_learner, mlp

#: (learner, hyper-parameters): MER with and without clipping and gamma != 1, La-MAML async, sync,
#: with fixed rates, unclipped and with the old task's memory, C-MAML
CASES = [
    ("mer", dict(batches_per_example=2)),
    ("mer", dict(batches_per_example=2, grad_clip_norm=0.5, gamma=0.6, beta=0.3)),
    ("mer", dict(replay_batch_size=3, batches_per_example=1, lr=0.05, memories=50)),
    ("mer", dict(batches_per_example=2, gamma=0.5)),
    ("lamaml", {}),
    ("lamaml", dict(sync_update=True)),
    ("lamaml", dict(learn_lr=False)),
    ("lamaml", dict(grad_clip_norm=None, glances=2)),
    ("lamaml", dict(use_old_task_memory=True, glances=2, memories=60)),
    ("cmaml", {}),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def mnist_like(n: int = 200, n_inputs: int = 784, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse non-negative inputs like MNIST pixels, and labels of 10 classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, n_inputs, generator=g) * (torch.rand(n, n_inputs, generator=g) > 0.8)
    return x, torch.randint(0, 10, (n,), generator=g)


def learned(
    name: str, fast_path: object, hp: dict, x: torch.Tensor, y: torch.Tensor, *, device="cpu", model=None
) -> Learner:
    """A learner on the ``fast_path`` path after learning ``x, y`` (784-48-32-10 MLP by default)."""
    net: nn.Module = model if model is not None else mlp(784, 10, (48, 32), seed=0)
    learner = make_learner(name, net, n_classes=10, seed=0, fast_path=fast_path, device=device, **hp)
    bs = learner.default_batch_size
    for i in range(0, len(x), bs):
        learner.learn(x[i : i + bs], y[i : i + bs], task=i // 100)
    return learner


def state(learner: Learner) -> torch.Tensor:
    """Weights and La-MAML's rates, flat, on the CPU."""
    parts = [*learner.model.parameters(), *getattr(learner, "alpha", {}).values()]
    return torch.cat([t.detach().reshape(-1) for t in parts]).cpu()

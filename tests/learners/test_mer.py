"""MER against a direct, slow transcription of Algorithm 1 (deepcopy + torch.optim.SGD)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from streamlearn.learners import MER, mlp
from streamlearn.replay import ReservoirBuffer


def naive_mer(
    model, xs, ys, *, lr, beta, gamma, replay_batch_size, batches_per_example, memories, seed, clip=None
):
    buffer = ReservoirBuffer(memories, xs.shape[1], seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for i in range(len(xs)):
        before = copy.deepcopy(model.state_dict())
        for _ in range(batches_per_example):
            weights_before = copy.deepcopy(model.state_dict())
            idx = buffer.sample_indices(replay_batch_size)
            bxs = [xs[i]] + [buffer.x[j].clone() for j in idx]
            bys = [ys[i]] + [buffer.y[j].clone() for j in idx]
            for bx, by in zip(bxs, bys, strict=True):
                opt.zero_grad()
                F.cross_entropy(model(bx[None]), by[None]).backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
            after = model.state_dict()
            model.load_state_dict(
                {k: weights_before[k] + beta * (after[k] - weights_before[k]) for k in after}
            )
        after = model.state_dict()
        model.load_state_dict({k: before[k] + gamma * (after[k] - before[k]) for k in after})
        buffer.add(xs[i : i + 1], ys[i : i + 1])
    return model


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("fast_path", ["compiled", "numpy", False])
@pytest.mark.parametrize(
    "hp",
    [
        dict(lr=0.1, beta=0.01, gamma=1.0, replay_batch_size=10, batches_per_example=5, memories=20),
        dict(lr=0.2, beta=0.3, gamma=0.5, replay_batch_size=4, batches_per_example=2, memories=7, clip=0.5),
    ],
)
def test_mer_matches_naive_transcription(blobs, fast_path, hp) -> None:
    x, y = blobs[0][:50], blobs[1][:50]
    hp = dict(hp)
    clip = hp.pop("clip", None)
    expected = naive_mer(mlp(6, 3, hidden=(5, 4), seed=1), x, y, seed=0, clip=clip, **hp)
    learner = MER(
        mlp(6, 3, hidden=(5, 4), seed=1), n_classes=3, seed=0, fast_path=fast_path, grad_clip_norm=clip, **hp
    )
    assert learner.path == (fast_path or "reference")
    for i in range(50):
        learner.learn(x[i : i + 1], y[i : i + 1])
    diff = float((flat(learner.model) - flat(expected)).abs().max())
    assert diff < 1e-5, diff
    assert learner.buffer is not None and learner.buffer.seen == 50


def test_lean_and_reference_paths_agree_on_the_mnist_mlp() -> None:
    # The 784-100-100-10 network with MNIST-like sparse inputs, the authors' hyper-parameters.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 784, generator=g) * (torch.rand(50, 784, generator=g) > 0.8)
    y = torch.randint(0, 10, (50,), generator=g)
    out = []
    for fast in ("compiled", "numpy", False):
        learner = MER(mlp(seed=0), n_classes=10, seed=0, fast_path=fast)
        for i in range(50):
            learner.learn(x[i : i + 1], y[i : i + 1])
        out.append(flat(learner.model))
    assert float((out[0] - out[2]).abs().max()) < 1e-5
    assert float((out[1] - out[2]).abs().max()) < 1e-5


def test_fast_path_refused_for_a_model_it_cannot_run() -> None:
    from streamlearn.learners import small_cnn

    with pytest.raises(ValueError, match="fast_path"):
        MER(small_cnn((1, 8, 8), 3, channels=2), n_classes=3, fast_path=True)
    assert MER(small_cnn((1, 8, 8), 3, channels=2), n_classes=3).fast_path is False

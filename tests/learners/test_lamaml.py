"""La-MAML / C-MAML against a direct transcription, and their meta-gradients against finite differences."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamlearn.learners import CMAML, LaMAML, mlp
from streamlearn.replay import ReservoirBuffer


def forward(x, params):
    """The tiny MLP written out by hand, independent of nn.Module and functional_call."""
    h = x
    for i in range(0, len(params) - 2, 2):
        h = torch.relu(F.linear(h, params[i], params[i + 1]))
    return F.linear(h, params[-2], params[-1])


def naive_lamaml(
    model, batches, *, glances, alpha_init, opt_lr, opt_wt, learn_lr, sync, clip, memories, rbs, seed
):
    params = list(model.parameters())
    alphas = [torch.full_like(p, alpha_init).requires_grad_(True) for p in params]
    opt_a = torch.optim.SGD(alphas, lr=opt_lr)
    opt_w = torch.optim.SGD(params, lr=opt_wt)
    buffer = ReservoirBuffer(memories, batches[0][0].shape[1], seed=seed)
    # the learner shuffles each glance with its own generator, seeded this way
    shuffle = np.random.Generator(np.random.PCG64([seed, 1]))
    for x, y in batches:
        for glance in range(glances):
            perm = torch.as_tensor(shuffle.permutation(len(x)))
            x, y = x[perm], y[perm]
            idx = torch.as_tensor(buffer.sample_indices(rbs))
            bx, by = torch.cat([buffer.x[idx], x]), torch.cat([buffer.y[idx], y])
            adapted = params
            meta_losses = []
            for s in range(len(x)):
                loss = F.cross_entropy(forward(x[s : s + 1], adapted), y[s : s + 1])
                grads = torch.autograd.grad(loss, adapted)
                adapted = [w - g * torch.relu(a) for w, g, a in zip(adapted, grads, alphas, strict=True)]
                if glance == 0:
                    buffer.add(x[s : s + 1], y[s : s + 1])
                meta_losses.append(F.cross_entropy(forward(bx, adapted), by))
            opt_a.zero_grad()
            opt_w.zero_grad()
            (sum(meta_losses) / len(meta_losses)).backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            torch.nn.utils.clip_grad_norm_(alphas, clip)
            if learn_lr:
                opt_a.step()
            if sync:
                opt_w.step()
            else:
                with torch.no_grad():
                    for p, a in zip(params, alphas, strict=True):
                        p -= p.grad * torch.relu(a)
    return params, alphas


def flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts])


@pytest.mark.parametrize("fast_path", ["compiled", "numpy", False])
@pytest.mark.parametrize("kind", ["lamaml", "cmaml"])
def test_matches_naive_transcription(blobs, kind, fast_path) -> None:
    x, y = blobs
    batches = [(x[i : i + 10], y[i : i + 10]) for i in range(0, 50, 10)]
    if kind == "lamaml":
        hp = dict(glances=3, alpha_init=0.15, opt_lr=0.3, opt_wt=0.1, learn_lr=True, sync=False)
        learner = LaMAML(
            mlp(6, 3, (5, 4), seed=2),
            n_classes=3,
            memories=8,
            replay_batch_size=5,
            glances=3,
            alpha_init=0.15,
            opt_lr=0.3,
            fast_path=fast_path,
            seed=0,
        )
    else:
        hp = dict(glances=3, alpha_init=0.1, opt_lr=0.0, opt_wt=0.1, learn_lr=False, sync=True)
        learner = CMAML(
            mlp(6, 3, (5, 4), seed=2),
            n_classes=3,
            memories=8,
            replay_batch_size=5,
            glances=3,
            alpha_init=0.1,
            opt_wt=0.1,
            fast_path=fast_path,
            seed=0,
        )
    params, alphas = naive_lamaml(
        mlp(6, 3, (5, 4), seed=2), batches, clip=2.0, memories=8, rbs=5, seed=0, **hp
    )
    for bx, by in batches:
        learner.learn(bx, by)
    assert learner.path == (fast_path or "reference")
    assert float((flat(learner.model.parameters()) - flat(params)).abs().max()) < 1e-5
    assert float((flat(learner.alpha.values()) - flat(alphas)).abs().max()) < 1e-5


def test_lean_and_reference_paths_agree_on_the_mnist_mlp() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 784, generator=g) * (torch.rand(50, 784, generator=g) > 0.8)
    y = torch.randint(0, 10, (50,), generator=g)
    out = []
    for fast in ("compiled", "numpy", False):
        learner = LaMAML(mlp(seed=0), n_classes=10, seed=0, fast_path=fast)
        for i in range(0, 50, 10):
            learner.learn(x[i : i + 10], y[i : i + 10], task=0)
        out.append(flat([*learner.model.parameters(), *learner.alpha.values()]))
    assert float((out[0] - out[2]).abs().max()) < 1e-5
    assert float((out[1] - out[2]).abs().max()) < 1e-5


def _problem(dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 6, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (4,), generator=g)
    bx = torch.cat([torch.rand(5, 6, generator=g, dtype=dtype), x])
    by = torch.cat([torch.randint(0, 3, (5,), generator=g), y])
    return x, y, bx, by


def test_second_order_alpha_gradient_matches_finite_differences() -> None:
    learner = LaMAML(mlp(6, 3, (5,), seed=0).double(), n_classes=3, second_order=True, alpha_init=0.15)
    with torch.no_grad():  # distinct rates per entry, all away from relu's kink
        for a in learner.alpha.values():
            a.uniform_(0.05, 0.3, generator=torch.Generator().manual_seed(0))
    x, y, bx, by = _problem(torch.float64)
    _, _, g_alpha = learner._glance(x, y, bx, by)
    eps = 1e-6
    rng = np.random.default_rng(0)
    for (name, a), ga in zip(learner.alpha.items(), g_alpha, strict=True):
        for _ in range(3):
            i = tuple(int(rng.integers(s)) for s in a.shape)
            with torch.no_grad():
                a[i] += eps
            up = learner._glance(x, y, bx, by)[0]
            with torch.no_grad():
                a[i] -= 2 * eps
            down = learner._glance(x, y, bx, by)[0]
            with torch.no_grad():
                a[i] += eps
            fd = (up - down) / (2 * eps)
            assert abs(fd - float(ga[i])) < 1e-6 + 1e-4 * abs(fd), (name, i, fd, float(ga[i]))


@pytest.mark.parametrize("fast_path", ["compiled", "numpy", False])
def test_first_order_gradients_match_finite_differences(fast_path) -> None:
    """First order: the inner gradients are constants; differentiate the rest numerically (float64)."""
    learner = LaMAML(mlp(6, 3, (5,), seed=0), n_classes=3, fast_path=fast_path)
    with torch.no_grad():
        for a in learner.alpha.values():
            a.uniform_(0.05, 0.3, generator=torch.Generator().manual_seed(0))
    x, y, bx, by = _problem(torch.float32)
    before = flat([*learner.model.parameters(), *learner.alpha.values()]).clone()
    _, g_theta, g_alpha = learner._glance(x, y, bx, by)
    # a glance only measures: θ, α and the buffer are as they were
    assert torch.equal(before, flat([*learner.model.parameters(), *learner.alpha.values()]))
    assert learner.buffer is not None and len(learner.buffer) == 0

    theta0 = [p.detach().double() for p in learner.model.parameters()]
    alpha0 = [a.detach().double() for a in learner.alpha.values()]
    xd, bxd = x.double(), bx.double()
    # inner trajectory at the base point: U_s = sum of the inner gradients up to step s
    adapted, U, Us = theta0, [torch.zeros_like(t) for t in theta0], []
    for s in range(len(x)):
        leaves = [f.clone().requires_grad_(True) for f in adapted]
        gs = torch.autograd.grad(F.cross_entropy(forward(xd[s : s + 1], leaves), y[s : s + 1]), leaves)
        U = [u + g for u, g in zip(U, gs, strict=True)]
        Us.append(U)
        adapted = [f - g * torch.relu(a) for f, g, a in zip(adapted, gs, alpha0, strict=True)]

    def objective(theta, alpha):
        losses = []
        for s in range(len(x)):
            adapted = [t - torch.relu(a) * u for t, a, u in zip(theta, alpha, Us[s], strict=True)]
            losses.append(F.cross_entropy(forward(bxd, adapted), by))
        return float(sum(losses) / len(losses))

    eps = 1e-6
    rng = np.random.default_rng(1)
    for which, base, grads in (("theta", theta0, g_theta), ("alpha", alpha0, g_alpha)):
        for k, t in enumerate(base):
            for _ in range(3):
                i = tuple(int(rng.integers(s)) for s in t.shape)
                plus = [v.clone() for v in base]
                minus = [v.clone() for v in base]
                plus[k][i] += eps
                minus[k][i] -= eps
                if which == "theta":
                    fd = (objective(plus, alpha0) - objective(minus, alpha0)) / (2 * eps)
                else:
                    fd = (objective(theta0, plus) - objective(theta0, minus)) / (2 * eps)
                got = float(grads[k][i])
                assert abs(fd - got) < 2e-6 + 1e-3 * abs(fd), (which, k, i, fd, got)


def test_old_task_memory_samples_the_buffer_as_of_the_task_switch(blobs) -> None:
    x, y = blobs
    learner = LaMAML(mlp(6, 3, (5,)), n_classes=3, memories=20, glances=1, use_old_task_memory=True)
    learner.learn(x[:10], y[:10], task=0)
    assert learner.old_buffer is None  # no switch yet: the live buffer is used
    learner.learn(x[10:20], y[10:20], task=1)
    assert learner.old_buffer is not None
    frozen = learner.old_buffer.x[: len(learner.old_buffer)].clone()
    assert len(learner.old_buffer) == 10 and len(learner.buffer) == 20
    learner.learn(x[20:30], y[20:30], task=1)
    assert torch.equal(learner.old_buffer.x[:10], frozen)  # unchanged while task 1 goes on
    rows = {tuple(r.tolist()) for r in x[:10]}
    assert all(tuple(r.tolist()) in rows for r in frozen)

"""The non-finite guard: an update that would break the model is undone exactly, for every learner."""

import pytest
import torch

from streamlearn.learners import make_learner, mlp
from tests.learners.test_contract import CASES, build, feed, state_vector


def _batch(learner, x, y, start: int):
    bs = learner.default_batch_size
    return x[start : start + bs], y[start : start + bs]


@pytest.mark.parametrize("name,fast,device", CASES)
@pytest.mark.parametrize("poison", ["all_1e30", "one_1e30"])
def test_a_poisoned_batch_is_undone_and_leaves_no_trace(blobs, name, fast, device, poison) -> None:
    x, y = blobs
    learner, twin = build(name, fast, device=device), build(name, fast, device=device)
    # 20 examples: the replay memory (30) is not full yet, so the batch is certainly stored.
    feed(learner, x, y, 0, 20)
    feed(twin, x, y, 0, 20)
    before = state_vector(learner).clone()
    bx, by = _batch(learner, x, y, 100)
    bx = bx.clone()
    if poison == "all_1e30":
        bx[:] = 1e30
    else:
        bx[0, 2] = 1e30
    updates, examples = learner.updates, learner.examples
    stats = learner.learn(bx, by, task=1)
    if stats.undone is None:
        # Plain SGD stores nothing; a model confident on the batch gets a gradient of exactly 0.
        assert learner.buffer is None, f"{name}: a 1e30 feature went into the replay memory"
        assert float(state_vector(learner).abs().max()) <= learner.max_abs_value
        return
    assert (learner.updates, learner.examples) == (updates, examples)
    assert torch.equal(state_vector(learner), before)
    # Nothing of it remains: RNG, buffer counters and task state too, so the learner goes on exactly
    # as a twin that never saw the batch.
    feed(learner, x, y, 110, 200)
    feed(twin, x, y, 110, 200)
    assert torch.equal(state_vector(learner), state_vector(twin))
    assert learner.buffer is None or learner.buffer.seen == twin.buffer.seen
    assert torch.isfinite(learner.predict_proba(x[:50])).all()


@pytest.mark.parametrize("name", ["sgd", "mer"])
def test_a_learning_rate_of_a_million_never_breaks_the_model(blobs, name) -> None:
    """Scenario (c) of the guardrails issue: lr raised to 1e6 through config."""
    x, y = blobs
    learner = make_learner(name, mlp(6, 3, (8,), seed=0), n_classes=3, lr=1e6)
    undone = 0
    for i in range(60):
        undone += learner.learn(x[i : i + 1], y[i : i + 1]).undone is not None
    assert undone > 0
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())
    assert max(float(p.detach().abs().max()) for p in learner.model.parameters()) <= learner.max_abs_value


def test_the_bound_is_the_learners_setting(blobs) -> None:
    x, y = blobs
    learner = make_learner("sgd", mlp(6, 3, (8,), seed=0), n_classes=3, lr=0.5)
    learner.max_abs_value = 1e-3  # every real update now goes past it
    stats = learner.learn(x[:1], y[:1])
    assert stats.undone is not None and "guard.max_abs_value" in stats.undone
    learner.max_abs_value = 1e6
    assert learner.learn(x[:1], y[:1]).undone is None


@pytest.mark.parametrize("name,fast,device", CASES)
def test_a_poisoned_example_with_a_wrong_guess_is_undone(blobs, name, fast, device) -> None:
    """The model's guess on the 1e30 example is wrong: the step is ~1e29 and must not stand."""
    x, y = blobs
    learner = build(name, fast, device=device)
    feed(learner, x, y, 0, 20)
    before = state_vector(learner).clone()
    bx = torch.full((learner.default_batch_size, 6), 1e30)
    guess = learner.predict_proba(torch.full((1, 6), 1.0)).argmax(1)
    by = ((guess.cpu() + 1) % 3).repeat(learner.default_batch_size)
    stats = learner.learn(bx, by)
    assert stats.undone is not None
    assert torch.equal(state_vector(learner), before)


@pytest.mark.parametrize("fast_path", [None, False])
def test_an_extreme_example_in_the_replay_memory_is_evicted_so_learning_goes_on(fast_path, caplog) -> None:
    """Features ×1e6 sit exactly at guard.max_abs_value, so one may be stored; replayed, it blows
    up every later update. The undo evicts it, and the next updates stand (before: 80% undone)."""
    from streamlearn.produce import stream_messages

    msgs = list(stream_messages("rotated-mnist-10k", 1))[:300]
    x = torch.tensor([m["x"] for m in msgs], dtype=torch.float32)
    y = torch.tensor([m["y"] for m in msgs])
    learner = make_learner("mer", mlp(784, 10, (48, 32), seed=0), n_classes=10, seed=0, fast_path=fast_path)
    undone = []
    for i in range(300):
        xi = x[i : i + 1] * (1e6 if 150 <= i < 153 else 1.0)
        undone.append(learner.learn(xi, y[i : i + 1]).undone is not None)
    assert learner.buffer is not None
    assert float(learner.buffer.x[: len(learner.buffer)].abs().max()) <= 1.0, "the x1e6 example stayed"
    assert sum(undone[160:]) <= 2, f"{sum(undone[160:])} of the last 140 updates were undone"
    assert "extreme magnitude" in caplog.text

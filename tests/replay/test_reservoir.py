import io

import numpy as np
import pytest
import torch
from scipy import stats

from streamlearn.replay import ReservoirBuffer


def _stream(n: int, d: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    # row i is (i, i, i) with label i % 7: the buffer's content identifies which items it kept
    return torch.arange(n, dtype=torch.float32)[:, None].repeat(1, d), torch.arange(n) % 7


def test_fills_then_keeps_capacity_and_counts_seen() -> None:
    buf = ReservoirBuffer(5, 3, seed=0)
    x, y = _stream(3)
    buf.add(x, y)
    assert len(buf) == 3 and buf.seen == 3
    assert torch.equal(buf.x[:3], x)
    x, y = _stream(40)
    buf.add(x, y, task=2)
    assert len(buf) == 5 and buf.seen == 43
    assert set(buf.task[:5].tolist()) <= {-1, 2}


def test_inclusion_is_uniform_over_the_stream_chi_square() -> None:
    # Every item of a 40-item stream must end up in a 10-slot reservoir with p = 10/40.
    n, cap, runs = 40, 10, 3000
    counts = np.zeros(n)
    for seed in range(runs):
        buf = ReservoirBuffer(cap, 1, seed=seed)
        buf.add(*_stream(n, 1))
        counts[buf.x[:, 0].long().numpy()] += 1
    assert counts.sum() == cap * runs
    expected = np.full(n, cap * runs / n)
    chi2, p = stats.chisquare(counts, expected)
    assert p > 1e-3, f"reservoir inclusion not uniform: chi2={chi2:.1f} p={p:.2e}\n{counts}"
    # and the stream's tail is not favoured: the last 10 items are kept as often as the first 10
    assert abs(counts[:10].sum() - counts[-10:].sum()) < 0.1 * counts[:10].sum()


def test_draws_are_distinct_within_a_draw_and_uniform() -> None:
    buf = ReservoirBuffer(20, 1, seed=1)
    buf.add(*_stream(20, 1))
    hits = np.zeros(20)
    for _ in range(2000):
        idx = buf.sample_indices(10)
        assert len(set(idx.tolist())) == 10
        hits[idx] += 1
    _, p = stats.chisquare(hits)
    assert p > 1e-3
    assert len(buf.sample_indices(50)) == 20  # never more than stored
    assert len(ReservoirBuffer(3, 1).sample_indices(2)) == 0


def test_sample_returns_stored_pairs() -> None:
    buf = ReservoirBuffer(8, 3, seed=0)
    buf.add(*_stream(30))
    x, y = buf.sample(5)
    assert x.shape == (5, 3)
    assert torch.equal(y, x[:, 0].long() % 7)


def test_state_round_trip_continues_identically() -> None:
    a = ReservoirBuffer(6, 3, seed=3)
    a.add(*_stream(20))
    blob = io.BytesIO()
    torch.save(a.state_dict(), blob)
    blob.seek(0)
    b = ReservoirBuffer(6, 3, seed=999)
    b.load_state_dict(torch.load(blob, weights_only=True))
    assert b.seen == 20 and len(b) == 6
    x, y = _stream(100)
    a.add(x[20:], y[20:])
    b.add(x[20:], y[20:])
    assert torch.equal(a.x, b.x) and a.seen == b.seen
    assert np.array_equal(a.sample_indices(4), b.sample_indices(4))


def test_memory_is_capacity_times_example_size() -> None:
    buf = ReservoirBuffer(200, 784)
    assert buf.nbytes() == 200 * (784 * 4 + 8 + 8)


def test_undo_returns_to_the_mark_exactly() -> None:
    """What an undone update added, and the draws it made, leave no trace."""
    torch.manual_seed(0)
    buf = ReservoirBuffer(capacity=4, n_inputs=3, seed=1)
    buf.add(torch.rand(6, 3), torch.arange(6))
    before = buf.state_dict()
    buf.mark()
    buf.sample_indices(2)
    buf.add(torch.rand(20, 3), torch.arange(20) % 3, task=2)
    assert buf.seen == 26
    buf.undo()
    after = buf.state_dict()
    assert after["seen"] == before["seen"] == 6
    assert after["rng"] == before["rng"]
    for key in ("x", "y", "task"):
        assert torch.equal(after[key], before[key]), key
    # ... and the buffer goes on as if the undone update never happened.
    twin = ReservoirBuffer(capacity=4, n_inputs=3, seed=1)
    twin.load_state_dict(before)
    more = torch.rand(5, 3)
    buf.add(more, torch.arange(5))
    twin.add(more, torch.arange(5))
    assert torch.equal(buf.x, twin.x) and buf.seen == twin.seen


def test_undo_while_filling_restores_size() -> None:
    buf = ReservoirBuffer(capacity=10, n_inputs=2, seed=0)
    buf.add(torch.ones(3, 2), torch.zeros(3, dtype=torch.long))
    buf.mark()
    buf.add(torch.full((4, 2), 7.0), torch.ones(4, dtype=torch.long))
    buf.undo()
    assert len(buf) == 3 and buf.seen == 3
    assert float(buf.x[:3].sum()) == 6.0


def test_undo_without_mark_is_an_error() -> None:
    buf = ReservoirBuffer(capacity=2, n_inputs=1)
    with pytest.raises(RuntimeError):
        buf.undo()

import io
import math
import random
from typing import Any

import numpy as np
import pytest
import torch

from streamlearn.evaluation.prequential import PrequentialMetrics

# A small hand-checkable stream: 3 classes, window 3, two tasks, one example without a loss.
Y_TRUE = [0, 1, 2, 1, 0, 2, 1]
Y_PRED = [0, 2, 1, 1, 0, 2, 0]
# correct:   1  0  0  1  1  1  0
LOSSES: list[float | None] = [0.5, 2.0, 1.5, 0.75, 0.25, None, 3.0]
TASKS = [0, 0, 0, 1, 1, 1, 1]


def fed(window: int = 3) -> PrequentialMetrics:
    m = PrequentialMetrics(n_classes=3, window=window)
    for t, p, loss, task in zip(Y_TRUE, Y_PRED, LOSSES, TASKS, strict=True):
        m.update(t, p, loss=loss, task=task)
    return m


def kappa_from_formula(y_true: list[int], y_pred: list[int], n_classes: int) -> float:
    """Cohen's kappa = (p_o − p_e) / (1 − p_e), computed from the confusion matrix, independently of river."""
    cm = np.zeros((n_classes, n_classes))
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    n = cm.sum()
    p_o = np.trace(cm) / n
    p_e = float(np.sum(cm.sum(axis=1) * cm.sum(axis=0))) / n**2
    return float((p_o - p_e) / (1 - p_e))


def test_empty_metrics_have_documented_defaults() -> None:
    m = PrequentialMetrics(n_classes=3)
    assert (m.n, m.accuracy, m.rolling_accuracy, m.kappa, m.drifts) == (0, 0.0, 0.0, 0.0, 0)
    assert math.isnan(m.loss)
    assert m.task_accuracy == {} and m.task_counts == {}


def test_values_match_hand_computed_expectations() -> None:
    m = fed()
    assert m.n == 7
    assert m.accuracy == pytest.approx(4 / 7)
    # last 3 outcomes: correct, correct, wrong
    assert m.rolling_accuracy == pytest.approx(2 / 3)
    assert m.task_accuracy == pytest.approx({0: 1 / 3, 1: 3 / 4})
    assert m.task_counts == {0: 3, 1: 4}
    # the last 3 examples that carried a loss (the None is skipped, not counted as 0)
    assert m.loss == pytest.approx((0.75 + 0.25 + 3.0) / 3)
    assert m.kappa == pytest.approx(kappa_from_formula(Y_TRUE, Y_PRED, 3))


def test_rolling_accuracy_after_each_example() -> None:
    m = PrequentialMetrics(n_classes=3, window=3)
    seen = []
    for t, p in zip(Y_TRUE, Y_PRED, strict=True):
        m.update(t, p)
        seen.append(m.rolling_accuracy)
    # correct bits 1 0 0 1 1 1 0, averaged over the last (up to) 3
    assert seen == pytest.approx([1, 1 / 2, 1 / 3, 1 / 3, 2 / 3, 1, 2 / 3])


def test_kappa_on_a_binary_case_worked_by_hand() -> None:
    m = PrequentialMetrics(n_classes=2)
    m.update_many([0, 0, 1, 1], [0, 1, 1, 1])
    # p_o = 3/4; row sums (2, 2), column sums (1, 3): p_e = (2·1 + 2·3)/16 = 1/2; kappa = (3/4 − 1/2)/(1/2)
    assert m.kappa == pytest.approx(0.5)


def test_kappa_on_a_random_stream_matches_its_formula() -> None:
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 5, 500).tolist()
    y_pred = [t if rng.random() < 0.6 else int(rng.integers(0, 5)) for t in y_true]
    m = PrequentialMetrics(n_classes=5)
    m.update_many(y_true, y_pred)
    assert m.kappa == pytest.approx(kappa_from_formula(y_true, y_pred, 5))
    assert m.accuracy == pytest.approx(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def test_update_many_equals_looping_update() -> None:
    losses = [0.5, 2.0, 1.5, 0.7, 0.25, 0.125, 3.0]
    one = PrequentialMetrics(n_classes=3, window=3)
    for t, p, loss in zip(Y_TRUE, Y_PRED, losses, strict=True):
        one.update(t, p, loss=loss, task=4)
    many = PrequentialMetrics(n_classes=3, window=3)
    assert many.update_many(Y_TRUE, Y_PRED, losses=losses, task=4) == 0
    assert many.snapshot() == one.snapshot()
    assert many.task_counts == {4: 7}


def test_snapshot_holds_every_value() -> None:
    m = fed()
    assert m.snapshot() == {
        "n": m.n,
        "accuracy": m.accuracy,
        "rolling_accuracy": m.rolling_accuracy,
        "kappa": m.kappa,
        "loss": m.loss,
        "drifts": m.drifts,
        "task_accuracy": m.task_accuracy,
        "task_counts": m.task_counts,
    }


def test_bad_input_is_rejected() -> None:
    m = PrequentialMetrics(n_classes=3)
    with pytest.raises(ValueError, match="outside"):
        m.update(3, 0)
    with pytest.raises(ValueError, match="outside"):
        m.update(0, -1)
    with pytest.raises(TypeError):
        m.update(1.0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same length"):
        m.update_many([0, 1], [0])
    with pytest.raises(ValueError, match="same length"):
        m.update_many([0, 1], [0, 1], losses=[0.1])
    assert m.n == 0
    m.update(np.int64(2), np.int64(2))  # type: ignore[arg-type]
    assert m.accuracy == 1.0


# -- checkpointing -------------------------------------------------------------------------------------


def random_stream(n: int, seed: int, n_classes: int = 4) -> list[tuple[int, int, float | None, int]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = rng.randrange(n_classes)
        p = t if rng.random() < 0.7 else rng.randrange(n_classes)
        loss = None if rng.random() < 0.1 else rng.random() * 3
        out.append((t, p, loss, i // 400))  # a new task every 400 examples
    return out


def feed(m: PrequentialMetrics, stream: list[tuple[int, int, float | None, int]]) -> None:
    for t, p, loss, task in stream:
        m.update(t, p, loss=loss, task=task)


def through_torch(state: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded: dict[str, Any] = torch.load(buf, weights_only=True)
    return loaded


def only_plain_values(x: object) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, int | str) and only_plain_values(v) for k, v in x.items())
    if isinstance(x, list):
        return all(only_plain_values(v) for v in x)
    return x is None or type(x) in (int, float, str, bool)


def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Drop ``drifts`` (ADWIN is only approximately restored) and make a NaN loss compare equal to itself."""
    out = {k: v for k, v in snapshot.items() if k != "drifts"}
    if math.isnan(out["loss"]):
        out["loss"] = "nan"
    return out


def test_loss_is_nan_until_an_example_carries_one() -> None:
    m = PrequentialMetrics(n_classes=2, window=2)
    m.update_many([0, 1], [0, 0])
    assert math.isnan(m.loss)
    m.update(1, 1, loss=0.5)
    assert m.loss == 0.5


def test_state_dict_holds_only_plain_values() -> None:
    m = PrequentialMetrics(n_classes=4, window=50)
    feed(m, random_stream(900, seed=1))
    assert only_plain_values(m.state_dict())


@pytest.mark.parametrize("stop_at", [0, 30, 1234])
def test_restore_then_continue_equals_an_uninterrupted_run(stop_at: int) -> None:
    stream = random_stream(2500, seed=7)
    uninterrupted = PrequentialMetrics(n_classes=4, window=100)
    feed(uninterrupted, stream)

    before = PrequentialMetrics(n_classes=4, window=100)
    feed(before, stream[:stop_at])
    after = PrequentialMetrics(n_classes=4, window=100)
    after.load_state_dict(through_torch(before.state_dict()))
    assert comparable(after.snapshot()) == comparable(before.snapshot())
    assert after.drifts == before.drifts
    feed(after, stream[stop_at:])

    got, want = after.snapshot(), uninterrupted.snapshot()
    # exact equality, not approx: a restart must not move the reported numbers at all
    assert comparable(got) == comparable(want)
    assert after.state_dict() == uninterrupted.state_dict() | {"drifts": after.drifts}


def test_restore_counts_past_drifts_but_not_refed_ones() -> None:
    # The saved window straddles the change at 2000, so ADWIN re-detects it while being re-fed.
    y_true, y_pred = errors_at_rates([0.05, 0.6], 2000, seed=0)
    m = PrequentialMetrics(n_classes=2, window=1000)
    m.update_many(y_true[:2500], y_pred[:2500])
    assert m.drifts >= 1
    restored = PrequentialMetrics(n_classes=2, window=1000)
    restored.load_state_dict(through_torch(m.state_dict()))
    assert restored.drifts == m.drifts


def test_restore_into_a_different_window_keeps_the_latest_outcomes() -> None:
    m = fed(window=5)
    smaller = PrequentialMetrics(n_classes=3, window=3)
    smaller.load_state_dict(through_torch(m.state_dict()))
    reference = fed(window=3)
    assert smaller.snapshot() == reference.snapshot()


def test_restore_rejects_incompatible_state() -> None:
    state = fed().state_dict()
    with pytest.raises(ValueError, match="classes"):
        PrequentialMetrics(n_classes=4).load_state_dict(state)
    with pytest.raises(ValueError, match="n is"):
        PrequentialMetrics(n_classes=3).load_state_dict(state | {"n": state["n"] + 1})
    with pytest.raises(ValueError, match="version"):
        PrequentialMetrics(n_classes=3).load_state_dict(state | {"version": 99})


# -- drift detection -------------------------------------------------------------------------------------


def errors_at_rates(rates: list[float], each: int, seed: int) -> tuple[list[int], list[int]]:
    """Binary outcomes whose error rate is ``rates[k]`` for the k-th block of ``each`` examples."""
    rng = random.Random(seed)
    y_true, y_pred = [], []
    for rate in rates:
        for _ in range(each):
            t = rng.randrange(2)
            y_true.append(t)
            y_pred.append(1 - t if rng.random() < rate else t)
    return y_true, y_pred


def test_adwin_flags_a_jump_in_the_error_rate() -> None:
    y_true, y_pred = errors_at_rates([0.05, 0.6], 2000, seed=0)
    m = PrequentialMetrics(n_classes=2)
    flagged_at = [i for i, (t, p) in enumerate(zip(y_true, y_pred, strict=True)) if m.update(t, p)]
    assert m.drifts == len(flagged_at) >= 1
    # the first detection follows the change, and promptly
    assert 2000 <= flagged_at[0] < 2300


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adwin_stays_quiet_on_a_stationary_stream(seed: int) -> None:
    m = PrequentialMetrics(n_classes=2)
    assert m.update_many(*errors_at_rates([0.05], 2000, seed=seed)) == 0
    assert m.drifts == 0


# -- queued outcomes (the daemon's path) ----------------------------------------------------------


def _probabilities(y_true: list[int], y_pred: list[int], n_classes: int, seed: int) -> np.ndarray:
    """Rows whose most probable class is ``y_pred`` (float32, as a model's softmax)."""
    rng = np.random.default_rng(seed)
    probs = rng.random((len(y_true), n_classes)) * 0.5
    probs[np.arange(len(y_pred)), y_pred] = 1.0
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 3, 10, 300])
def test_queued_outcomes_equal_recording_each_at_once(batch: int) -> None:
    # Two tasks, a drift in the middle, a nan row, micro-batches that straddle the 256 flush, and
    # micro-batches larger than the queue (recorded at once).
    y_true, y_pred = errors_at_rates([0.05, 0.6], 700, seed=1)
    probs = _probabilities(y_true, y_pred, 2, seed=1)
    probs[5] = np.nan
    at_once, queued = PrequentialMetrics(n_classes=2, window=50), PrequentialMetrics(n_classes=2, window=50)
    seen_now: list[tuple[int, float]] = []
    seen_queued: list[tuple[int, float]] = []
    queued.on_drift = lambda n, rolling: seen_queued.append((n, rolling))
    for i in range(0, len(y_true), batch):
        task = 0 if i < 700 else 1
        rows, labels = probs[i : i + batch], y_true[i : i + batch]
        if at_once.update_from_probabilities(rows, labels, task):
            seen_now.append((at_once.n, at_once.rolling_accuracy))
        queued.add_probabilities(rows, labels, task)
        if i % 97 == 0:  # any read records what is queued: reads in between change nothing
            assert queued.n == at_once.n
    assert queued.snapshot() == at_once.snapshot()
    assert queued.state_dict() == at_once.state_dict()
    assert len(seen_queued) == queued.drifts >= 1
    if batch == 1:  # per example, the moment of detection is exactly the synchronous one
        assert seen_queued == seen_now


def test_queued_outcomes_are_dropped_by_a_restore_and_checked_when_queued() -> None:
    m = PrequentialMetrics(n_classes=3)
    m.update_many([0, 1], [0, 1])
    state = m.state_dict()
    m.add_probabilities(np.eye(3, dtype=np.float32), [0, 1, 2], task=1)
    m.load_state_dict(state)  # a rollback: what was queued after the state is gone, as if recorded
    assert (m.n, m.task_counts) == (2, {})
    with pytest.raises(ValueError, match="outside"):
        m.add_probabilities(np.eye(3, dtype=np.float32), [0, 1, 3])
    with pytest.raises(ValueError, match="shape"):
        m.add_probabilities(np.eye(3, dtype=np.float32), [0, 1])
    with pytest.raises(ValueError, match="shape"):  # one class short: not n_classes wide
        m.add_probabilities(np.eye(3, dtype=np.float32)[:, :2], [0, 1, 2])
    assert m.n == 2


def test_runs_of_micro_batches_queue_as_each_batch_would() -> None:
    # What the daemon hands over once a poll: one array for many micro-batches of several tasks
    # (and none), in chunks that straddle the 256 flush and exceed it.
    y_true, y_pred = errors_at_rates([0.1, 0.5, 0.2], 300, seed=2)
    probs = _probabilities(y_true, y_pred, 2, seed=2)
    tasks: list[int | None] = [None if i < 100 else i // 250 for i in range(len(y_true))]
    per_batch = PrequentialMetrics(n_classes=2, window=40)
    per_poll = PrequentialMetrics(n_classes=2, window=40)
    for i in range(len(y_true)):
        per_batch.add_probabilities(probs[i : i + 1], y_true[i : i + 1], tasks[i])
    start = 0
    for size in [1, 7, 100, 3, 300, 5, 200, 284]:
        chunk = tasks[start : start + size]
        runs: list[tuple[int | None, int]] = []
        for task in chunk:
            if runs and runs[-1][0] == task:
                runs[-1] = (task, runs[-1][1] + 1)
            else:
                runs.append((task, 1))
        per_poll.add_runs(probs[start : start + size], y_true[start : start + size], runs)
        start += size
    assert start == len(y_true)
    assert per_poll.state_dict() == per_batch.state_dict()
    assert per_poll.snapshot() == per_batch.snapshot()
    assert per_poll.drifts >= 1  # the error rate jumps: ADWIN saw the outcomes in order


def test_runs_that_do_not_cover_the_rows_are_refused_whole() -> None:
    m = PrequentialMetrics(n_classes=3)
    with pytest.raises(ValueError, match="runs of"):
        m.add_runs(np.eye(3, dtype=np.float32), [0, 1, 2], [(0, 2)])
    with pytest.raises(ValueError, match="outside"):
        m.add_runs(np.eye(3, dtype=np.float32), [0, 1, 3], [(0, 1), (1, 2)])
    with pytest.raises(TypeError):
        m.add_runs(np.eye(3, dtype=np.float32), [0, 1, 2], [(0, 1), (1.5, 2)])  # type: ignore[list-item]
    assert m.n == 0 and m.task_counts == {}

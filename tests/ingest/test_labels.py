"""LabelMap / TaskMap: index assignment, refusals with reasons, and checkpoint round trips."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from streamlearn.ingest.labels import LABEL_REASONS, MAX_TASK, LabelMap, TaskMap


def _torch_round_trip(state: dict[str, Any]) -> Any:
    # Exactly how checkpoints are read: weights_only refuses anything but tensors and plain values.
    buf = io.BytesIO()
    torch.save({"labels": state}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)["labels"]


def test_int_mode_label_is_its_own_index() -> None:
    m = LabelMap(capacity=3)
    assert m.mode is None and m.names() == []
    assert [m.index(2), m.index(0), m.index(2)] == [2, 0, 2]
    assert m.mode == "int"
    assert m.names() == ["0", "1", "2"]  # every class has a name in int mode, seen or not
    assert m.name(1) == "1"
    with pytest.raises(IndexError):
        m.name(3)


@pytest.mark.parametrize("label", [3, 10**30, -1])
def test_int_mode_refuses_out_of_range(label: int) -> None:
    m = LabelMap(capacity=3)
    assert m.reason(label) == "label_out_of_range"
    assert m.index(label) is None
    assert m.mode is None  # a refused label must not fix the mode
    assert m.index("cat") == 0


def test_str_mode_numbers_labels_in_order_of_first_appearance() -> None:
    m = LabelMap(capacity=5)
    assert [m.index(s) for s in ["dog", "cat", "dog", "bird", "cat"]] == [0, 1, 0, 2, 1]
    assert m.mode == "str"
    assert m.names() == ["dog", "cat", "bird"]  # only the labels seen, in index order
    assert [m.name(i) for i in range(3)] == ["dog", "cat", "bird"]
    with pytest.raises(IndexError):
        m.name(3)
    with pytest.raises(IndexError):
        m.name(-1)


def test_new_string_beyond_capacity_is_refused_but_known_ones_still_map() -> None:
    m = LabelMap(capacity=2)
    assert m.index("a") == 0 and m.index("b") == 1
    assert m.reason("c") == "label_capacity_exceeded"
    assert m.index("c") is None
    assert m.index("b") == 1 and m.reason("a") is None
    assert m.names() == ["a", "b"]


@pytest.mark.parametrize(
    ("first", "second"),
    [(1, "a"), ("a", 1), ("0", 0)],
)
def test_mode_is_fixed_by_first_accepted_label(first: Any, second: Any) -> None:
    m = LabelMap(capacity=4)
    assert m.index(first) is not None
    assert m.reason(second) == "label_type_mismatch"
    assert m.index(second) is None
    assert m.peek(second) is None


@pytest.mark.parametrize("label", [True, False, 1.0, None, [1], {"a": 1}])
def test_non_int_non_str_labels_are_type_mismatches(label: Any) -> None:
    m = LabelMap(capacity=4)
    assert m.reason(label) == "label_type_mismatch"
    assert m.index(label) is None
    assert m.mode is None


def test_every_reason_is_declared() -> None:
    m = LabelMap(capacity=1)
    m.index("a")
    seen = {m.reason(1), m.reason("b"), LabelMap(1).reason(5)}
    assert seen == set(LABEL_REASONS)


def test_peek_never_adds() -> None:
    m = LabelMap(capacity=3)
    assert m.peek("a") is None  # acceptable, but not seen yet
    assert m.peek(2) == 2
    assert m.mode is None and m.names() == []  # neither peek fixed the mode
    assert m.index("a") == 0
    assert m.peek("a") == 0
    assert m.peek("b") is None
    assert m.names() == ["a"]


def test_capacity_must_be_positive() -> None:
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError):
            LabelMap(capacity=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("labels", [["cat", "dog"], [7, 1], []])
def test_label_state_round_trips_through_torch_weights_only(labels: list[Any]) -> None:
    m = LabelMap(capacity=10)
    for label in labels:
        m.index(label)
    state = _torch_round_trip(m.state_dict())
    assert state == m.state_dict()
    assert all(type(v) in (int, str, list, type(None)) for v in state.values())

    restored = LabelMap(capacity=10)
    restored.load_state_dict(state)
    assert restored.mode == m.mode and restored.names() == m.names()
    if m.mode == "str":
        # numbering continues where the checkpoint left off, and known labels keep their index
        assert restored.index("bird") == 2 and restored.index("cat") == 0
    elif m.mode == "int":
        assert restored.reason("cat") == "label_type_mismatch"
    else:
        assert restored.index("x") == 0


def test_label_state_must_fit_this_map() -> None:
    m = LabelMap(capacity=3)
    m.index("a")
    good = m.state_dict()
    bad_states = [
        {**good, "capacity": 4},
        {**good, "mode": "float"},
        {**good, "labels": ["a", "a"]},
        {**good, "labels": ["a", 1]},
        {**good, "labels": ["a", "b", "c", "d"]},
        {**good, "mode": "int"},  # int mode keeps no labels
        {"mode": "str", "labels": ["a"]},  # capacity missing
    ]
    for state in bad_states:
        target = LabelMap(capacity=3)
        target.index("z")
        with pytest.raises(ValueError):
            target.load_state_dict(state)
        assert target.names() == ["z"]  # a refused state leaves the map as it was


def test_task_int_mode_passes_ids_through() -> None:
    t = TaskMap()
    assert [t.index(5), t.index(0), t.index(MAX_TASK)] == [5, 0, MAX_TASK]
    assert t.mode == "int" and t.name(5) == "5"
    for bad in (-1, MAX_TASK + 1, "a", True, 1.0, None):
        assert t.reason(bad) == "bad_task"
        assert t.index(bad) is None


def test_task_str_mode_numbers_in_order_of_first_appearance() -> None:
    t = TaskMap()
    assert t.peek("rot-0") is None and t.mode is None
    assert [t.index(s) for s in ["rot-0", "rot-30", "rot-0"]] == [0, 1, 0]
    assert t.peek("rot-30") == 1 and t.peek("rot-60") is None
    assert t.mode == "str" and t.name(1) == "rot-30"
    assert t.reason(0) == "bad_task" and t.index(0) is None
    with pytest.raises(IndexError):
        t.name(2)


def test_task_state_round_trips_through_torch_weights_only() -> None:
    t = TaskMap()
    for s in ["b", "a"]:
        t.index(s)
    restored = TaskMap()
    restored.load_state_dict(_torch_round_trip(t.state_dict()))
    assert restored.state_dict() == {"mode": "str", "labels": ["b", "a"]}
    assert restored.index("c") == 2 and restored.index("b") == 0

    with pytest.raises(ValueError):
        TaskMap().load_state_dict({"mode": "int", "labels": ["a"]})

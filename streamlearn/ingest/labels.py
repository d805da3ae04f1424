"""Label and task maps: what the stream calls a class (or a task) → the index the model uses.

Producers may send integer class ids or string labels. A model only knows output indices
``0..capacity-1``, so string labels get indices in order of first appearance and the map goes into
every checkpoint: without it a restart could give "cat" a different output unit than before.

A stream is either all-int or all-str, fixed by the first label *accepted*. Mixing would make ``3``
and ``"3"`` two classes that an operator cannot tell apart on a dashboard, so it is refused.

Neither map is thread-safe: the decoder that owns them runs on the consumer's one thread.

>>> labels = LabelMap(capacity=3)
>>> labels.index("cat"), labels.index("dog"), labels.index("cat")
(0, 1, 0)
>>> labels.reason(7), labels.index(7)
('label_type_mismatch', None)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Mode = Literal["int", "str"]

# Every code LabelMap.reason can return; the decoder uses them verbatim as rejection reasons.
LABEL_REASONS: tuple[str, ...] = ("label_type_mismatch", "label_out_of_range", "label_capacity_exceeded")

# Task ids end up in the replay buffer's int64 tensor: a larger one could not be stored.
MAX_TASK = 2**63 - 1


class _FirstSeenNames:
    """Strings → 0, 1, 2, ... in order of first appearance; the shared half of both maps."""

    def __init__(self) -> None:
        self._mode: Mode | None = None
        self._names: list[str] = []
        self._index: dict[str, int] = {}

    @property
    def mode(self) -> Mode | None:
        """``"int"`` or ``"str"`` once a first label/task has been accepted, else None."""
        return self._mode

    def _add(self, name: str) -> int:
        i = self._index.get(name)
        if i is None:
            i = len(self._names)
            self._names.append(name)
            self._index[name] = i
        self._mode = "str"
        return i

    def _load_names(self, state: Mapping[str, Any], limit: int | None) -> tuple[Mode | None, list[str]]:
        """Validate the mode/labels half of a state dict without touching ``self``."""
        mode = state.get("mode")
        names = state.get("labels")
        if mode not in (None, "int", "str"):
            raise ValueError(f"mode must be None, 'int' or 'str', got {mode!r}")
        if not isinstance(names, list) or not all(type(n) is str for n in names):
            raise ValueError("labels must be a list of strings")
        if len(set(names)) != len(names):
            raise ValueError("labels contain duplicates")
        if mode != "str" and names:
            raise ValueError(f"labels must be empty in mode {mode!r}, got {len(names)}")
        if limit is not None and len(names) > limit:
            raise ValueError(f"{len(names)} labels exceed the capacity of {limit}")
        return mode, names

    def _set_names(self, mode: Mode | None, names: list[str]) -> None:
        self._mode = mode
        self._names = list(names)
        self._index = {n: i for i, n in enumerate(names)}


class LabelMap(_FirstSeenNames):
    """Class labels → output indices, bounded by the model's class capacity.

    Int mode: the label *is* the index and must be in ``0..capacity-1``. Str mode: new strings
    take the next free index until ``capacity`` are taken. ``bool`` is not an int here: ``true``
    as a label is a producer bug, not class 1.
    """

    def __init__(self, capacity: int) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        super().__init__()
        self.capacity = capacity

    def reason(self, label: object) -> str | None:
        """Why ``index(label)`` would refuse it now (a LABEL_REASONS code), or None if it would not.

        Never mutates, so the decoder can check a whole message before registering anything.
        """
        if type(label) is int:
            if self._mode == "str":
                return "label_type_mismatch"
            return None if 0 <= label < self.capacity else "label_out_of_range"
        if type(label) is str:
            if self._mode == "int":
                return "label_type_mismatch"
            if label not in self._index and len(self._names) >= self.capacity:
                return "label_capacity_exceeded"
            return None
        return "label_type_mismatch"

    def peek(self, label: object) -> int | None:
        """The index ``label`` has now, or None (refused, or a string not seen yet); never adds."""
        if self.reason(label) is not None:
            return None
        if type(label) is int:
            return label
        return self._index.get(label) if type(label) is str else None

    def index(self, label: object) -> int | None:
        """The index for ``label``, registering a new string (and fixing the mode); None if refused."""
        if self.reason(label) is not None:
            return None
        if type(label) is int:
            self._mode = "int"
            return label
        assert type(label) is str  # reason() refuses every other type
        return self._add(label)

    def names(self) -> list[str]:
        """Display name per index: every ``str(i)`` in int mode, the labels seen in str mode."""
        if self._mode == "int":
            return [str(i) for i in range(self.capacity)]
        return list(self._names)

    def name(self, i: int) -> str:
        """Display name of index ``i``; IndexError if no label has that index."""
        if self._mode == "int" and 0 <= i < self.capacity:
            return str(i)
        if self._mode == "str" and 0 <= i < len(self._names):
            return self._names[i]
        raise IndexError(f"no label has index {i}")

    def state_dict(self) -> dict[str, Any]:
        """Plain values only, so a checkpoint holding it loads with ``torch.load(weights_only=True)``."""
        return {"capacity": self.capacity, "mode": self._mode, "labels": list(self._names)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from ``state_dict()``; ValueError (and no change) if it does not fit this map.

        The capacity must match: it is the model's output size, so a different one means the
        checkpoint belongs to another configuration.
        """
        capacity = state.get("capacity")
        if type(capacity) is not int or capacity != self.capacity:
            raise ValueError(
                f"label map capacity mismatch: checkpoint {capacity!r}, configured {self.capacity}"
            )
        mode, names = self._load_names(state, self.capacity)
        self._set_names(mode, names)


class TaskMap(_FirstSeenNames):
    """Optional task ids → task indices, unbounded.

    Int mode passes ``0..MAX_TASK`` through unchanged; str mode numbers strings in order of first
    appearance. The only refusal is ``"bad_task"``: wrong type for the mode, negative, or too big.
    """

    def reason(self, task: object) -> str | None:
        """``"bad_task"`` if ``index(task)`` would refuse it now, else None; never mutates."""
        if type(task) is int:
            return None if self._mode != "str" and 0 <= task <= MAX_TASK else "bad_task"
        if type(task) is str:
            return None if self._mode != "int" else "bad_task"
        return "bad_task"

    def peek(self, task: object) -> int | None:
        """The index ``task`` has now, or None (refused, or a string not seen yet); never adds."""
        if self.reason(task) is not None:
            return None
        if type(task) is int:
            return task
        return self._index.get(task) if type(task) is str else None

    def index(self, task: object) -> int | None:
        """The index for ``task``, registering a new string (and fixing the mode); None if refused."""
        if self.reason(task) is not None:
            return None
        if type(task) is int:
            self._mode = "int"
            return task
        assert type(task) is str  # reason() refuses every other type
        return self._add(task)

    def name(self, i: int) -> str:
        """Display name of task index ``i``; IndexError if no task has that index."""
        if self._mode == "int" and 0 <= i <= MAX_TASK:
            return str(i)
        if self._mode == "str" and 0 <= i < len(self._names):
            return self._names[i]
        raise IndexError(f"no task has index {i}")

    def state_dict(self) -> dict[str, Any]:
        """Plain values only, so a checkpoint holding it loads with ``torch.load(weights_only=True)``."""
        return {"mode": self._mode, "labels": list(self._names)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from ``state_dict()``; ValueError (and no change) if the state is malformed."""
        mode, names = self._load_names(state, None)
        self._set_names(mode, names)

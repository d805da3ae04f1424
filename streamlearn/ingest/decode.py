"""Decode and validate messages from the ``examples`` topic: the data path's front door.

Contract (``schemas/example.schema.json``)::

    {"x": [float, ...], "y": int | str, "id": str?, "task": int | str?, "ts": int?}

``Decoder.decode`` turns every input into an ``Example`` or a ``Rejection`` and never raises: one
bad producer must not stop the daemon, and nothing is dropped without a counted reason. Reason
codes form the fixed set ``REASONS`` because they become a Prometheus label (bounded cardinality).

Leniencies, on purpose: unknown top-level keys are ignored (forward compatibility: producers can
add fields first), ``null`` for an optional key means absent, and one UTF-8 byte-order mark before
the JSON is skipped (RFC 8259 §8.1 lets a parser ignore it; Windows/.NET serialisers write one).
Strictness, on purpose: ``true`` is not the number 1, ``1.0`` is not the class id 1, and
NaN/Infinity (which Python's ``json`` would accept) are rejected.

Speed (784-float message, ~6-8 KB, on the 2-core dev box): a message laid out as producers write
it (``x`` first, plain numbers) takes the fast path (``fastx.py``): ``x`` is read straight from the
bytes into float32 by a compiled scanner and orjson parses only the other keys, ~11 µs a message,
of which the daemon's thread pays ~3 (``parse_ahead.py`` runs the scanner on a worker). Anything
else, and anything the scanner is not sure of, takes the general path, which decides every
rejection: ``orjson`` (~11-18 µs against ~170 µs for ``json.loads``), x converted in C
(``array("f")``) and checked with one vectorised ``isfinite``, ~25-30 µs for a valid message, more
when "true" or "false" in it forces the type scan (see ``_features``). Rejections cost less, except
NaN/Infinity, which pay for a second, stdlib parse (~430 µs) to be named precisely.
"""

from __future__ import annotations

import json
import logging
import math
from array import array
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import orjson

from streamlearn.ingest.fastx import fast_rest, parse_fast, scan_many
from streamlearn.ingest.labels import LABEL_REASONS, MAX_TASK, LabelMap, TaskMap

log = logging.getLogger(__name__)

REASONS: tuple[str, ...] = (
    "empty",  # a null value (Kafka tombstone), zero bytes, or only a UTF-8 byte-order mark
    "not_bytes",  # the consumer handed something other than bytes: a bug upstream, counted not raised
    "oversized",  # longer than max_bytes; refused before parsing
    "not_utf8",
    "not_json",
    "not_object",  # valid JSON, but not a {...} object at the top
    "missing_x",
    "bad_x",  # x not an array, or an element that is not a number (bool, string, null, array, object)
    "wrong_length",
    "non_finite",  # NaN/Infinity literals, numbers overflowing a double, or x values beyond float32
    "missing_y",
    "bad_y",  # null, bool, float, array, object or empty string
    *LABEL_REASONS,  # label_type_mismatch, label_out_of_range, label_capacity_exceeded
    "bad_task",
    "bad_id",
    "bad_ts",
    "internal_error",  # a decoder bug; never expected, counted so a bug cannot stop the daemon
)

_INT64_MAX = 2**63 - 1
_UTF8_BOM = b"\xef\xbb\xbf"
_NUMBER_TYPES = frozenset((int, float))
_JSON_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "a boolean",
    int: "an integer",
    float: "a non-integer number",
    str: "a string",
    list: "an array",
    dict: "an object",
}
_MAX_LOGGED_BUGS = 10


# Example and Parsed are values, never changed once made, but not frozen: a frozen dataclass sets
# each field through object.__setattr__ (0.72 µs against 0.32 for these six), once a message.
@dataclass(slots=True)
class Example:
    """One accepted message, ready for a learner."""

    x: np.ndarray  # float32, shape (n_inputs,), all finite
    y: int  # class index (LabelMap)
    label: int | str  # the label as sent
    task: int | None  # task index (TaskMap) or None
    id: str | None
    ts: int | None  # epoch milliseconds


@dataclass(slots=True)
class Parsed:
    """A message whose bytes, JSON and features are valid: what :meth:`Decoder.parse` leaves to
    :meth:`Decoder.finish` (the label, task, id and ts, checked against the maps in stream order)."""

    doc: dict[str, Any]  # the message's other keys ("x" taken out: its floats are freed at once)
    x: np.ndarray


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that cannot be learned from, and why."""

    reason: str  # one of REASONS
    detail: str  # one human sentence for logs; may quote (truncated) parts of the message


class Decoder:
    """Bytes from Kafka → ``Example`` | ``Rejection``, registering new labels/tasks only on success.

    Owns no state besides the two maps it is given, which belong in checkpoints. Single-threaded,
    like the maps.
    """

    def __init__(self, n_inputs: int, labels: LabelMap, tasks: TaskMap, max_bytes: int = 1_048_576) -> None:
        if type(n_inputs) is not int or n_inputs < 1:
            raise ValueError(f"n_inputs must be an int >= 1, got {n_inputs!r}")
        if type(max_bytes) is not int or max_bytes < 1:
            raise ValueError(f"max_bytes must be an int >= 1, got {max_bytes!r}")
        self.n_inputs = n_inputs
        self.labels = labels
        self.tasks = tasks
        self.max_bytes = max_bytes
        self._bugs_logged = 0

    def decode(self, raw: bytes | None) -> Example | Rejection:
        """Decode one message value; never raises, whatever ``raw`` is."""
        parsed = self.parse(raw)
        return self.finish(parsed) if isinstance(parsed, Parsed) else parsed

    def parse(self, raw: bytes | None) -> Parsed | Rejection:
        """The part of ``decode`` that reads no map: bytes, JSON, features. Never raises.

        The daemon parses a poll's messages in one go (the parser's code and tables stay in cache
        instead of being evicted by learning between messages), then finishes them in order."""
        try:
            return self._parse(raw)
        except Exception as exc:
            return self._bug(exc)

    def finish(self, parsed: Parsed) -> Example | Rejection:
        """The rest of ``decode``: label, task, id, ts; registers a new label or task only on
        success, so messages must be finished in stream order. Never raises."""
        try:
            return self._finish(parsed)
        except Exception as exc:
            return self._bug(exc)

    def _bug(self, exc: Exception) -> Rejection:
        # A bug must cost one message, not the daemon; log the first few loudly, count the rest.
        if self._bugs_logged < _MAX_LOGGED_BUGS:
            self._bugs_logged += 1
            log.error("decoder bug on a message (rejected as internal_error)", exc_info=exc)
        return Rejection("internal_error", f"decoder bug: {type(exc).__name__}: {_short(exc)}")

    def parse_many(self, raws: list[Any]) -> list[Parsed | Rejection]:
        """``[parse(r) for r in raws]``, the same results, with one compiled scan of all the ``x``
        arrays: it releases the GIL once, not once a message (``parse_ahead.py``). Never raises."""
        try:
            checked = [self._checked(raw) for raw in raws]
            scanned = scan_many([c for c in checked if type(c) is bytes], self.n_inputs)
        except Exception:
            return [self.parse(raw) for raw in raws]
        rows = iter(zip(*scanned, strict=True)) if scanned is not None else None
        return [c if isinstance(c, Rejection) else self._parse_checked(c, rows) for c in checked]

    def _parse(self, raw: object) -> Parsed | Rejection:
        checked = self._checked(raw)
        return checked if isinstance(checked, Rejection) else self._parse_checked(checked, None)

    def _parse_checked(self, raw: bytes, rows: Any) -> Parsed | Rejection:
        """Fast path (x first, plain numbers: no Python float made; ``rows`` yields the batch
        scanner's row and rest for it), else the general path. Never raises."""
        try:
            fast = parse_fast(raw, self.n_inputs) if rows is None else fast_rest(raw, *next(rows))
            return Parsed(*fast) if fast is not None else self._parse_general(raw)
        except Exception as exc:
            return self._bug(exc)

    def _checked(self, raw: object) -> bytes | Rejection:
        """The value as bytes to parse (byte-order mark removed), or why there is nothing to parse."""
        if raw is None:
            return Rejection("empty", "the value is null (a tombstone): there is no example in it")
        if type(raw) is not bytes:
            if not isinstance(raw, bytes | bytearray | memoryview):
                return Rejection(
                    "not_bytes", f"expected the message value as bytes, got {type(raw).__name__}"
                )
            raw = bytes(raw)
        assert isinstance(raw, bytes)
        size = len(raw)
        if size == 0:
            return Rejection("empty", "the value is zero bytes long: there is no example in it")
        if size > self.max_bytes:
            return Rejection("oversized", f"the message is {size} bytes, the limit is {self.max_bytes}")
        if raw.startswith(_UTF8_BOM):  # one only: RFC 8259 lets a parser skip it, orjson does not
            raw = raw[len(_UTF8_BOM) :]
            if not raw:
                return Rejection(
                    "empty", "the value is only a UTF-8 byte-order mark: there is no example in it"
                )
        return raw

    def _parse_general(self, raw: bytes) -> Parsed | Rejection:
        """The whole message through orjson: what decides every message the scanner declines."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _parse_failure(raw, exc)
        if type(doc) is not dict:
            return Rejection("not_object", f"the message is {_kind(doc)}, expected a JSON object")

        x = self._features(doc, raw)
        if isinstance(x, Rejection):
            return x
        del doc["x"]
        return Parsed(doc, x)

    def _finish(self, parsed: Parsed) -> Example | Rejection:
        doc = parsed.doc
        label = doc.get("y")
        task = doc.get("task")
        ident = doc.get("id")
        ts = doc.get("ts")
        problem = self._check_label(doc, label) or self._check_task(task) or _check_id(ident) or _check_ts(ts)
        if problem is not None:
            return problem

        # Only now, with the whole message valid, may the maps learn a new label or task.
        y = self.labels.index(label)
        task_index = None if task is None else self.tasks.index(task)
        # all checked above; the asserts say so to mypy
        assert isinstance(label, int | str) and y is not None and (task is None or task_index is not None)
        return Example(x=parsed.x, y=y, label=label, task=task_index, id=ident, ts=ts)

    def _features(self, doc: dict[str, Any], raw: bytes) -> np.ndarray | Rejection:
        if "x" not in doc:
            return Rejection("missing_x", "no 'x' key: the feature vector is required")
        values = doc["x"]
        n = self.n_inputs
        if type(values) is not list:
            return Rejection("bad_x", f"x is {_kind(values)}, expected an array of {n} numbers")
        if len(values) != n:
            return Rejection("wrong_length", f"x has {len(values)} values, expected {n}")
        # array("f") converts in C and refuses strings, nulls, arrays and objects, but takes
        # booleans as 0/1. A JSON boolean is the bytes "true" or "false" (no escape can spell one),
        # so a message holding neither has no boolean anywhere and the conversion alone is exact;
        # otherwise (a boolean, or those letters inside a string) an explicit type scan runs
        # first, ~6-16 µs more for 784 values. Searching 6 KB for a word costs ~2 µs, for one
        # byte ~0.1 µs (memchr): without a "u" and an "l" there is neither word.
        arr = None if _may_hold_a_boolean(raw) else _to_float32(values)
        if arr is None:
            bad = _first_non_number(values)
            if bad is not None:
                return Rejection("bad_x", f"x[{bad}] is {_kind(values[bad])}, expected a number")
            arr = _to_float32(values)
            if arr is None:  # an integer too large for a double; orjson never yields one
                return Rejection("non_finite", "x holds an integer too large for a double")
        # orjson yields no NaN/inf, but a finite double past float32's range became inf above.
        if not np.isfinite(arr).all():
            i = int(np.argmin(np.isfinite(arr)))
            return Rejection("non_finite", f"x[{i}] = {_short(values[i])} is beyond float32's range")
        return arr

    def _check_label(self, doc: dict[str, Any], label: object) -> Rejection | None:
        if "y" not in doc:
            return Rejection("missing_y", "no 'y' key: the label is required")
        if type(label) is str:
            if not label:
                return Rejection("bad_y", "y is an empty string")
        elif type(label) is not int:
            return Rejection("bad_y", f"y is {_kind(label)}, expected an integer class id or a string label")
        code = self.labels.reason(label)
        if code is None:
            return None
        labels = self.labels
        if code == "label_out_of_range":
            detail = f"y = {label} is outside the class ids 0..{labels.capacity - 1}"
        elif code == "label_capacity_exceeded":
            detail = f"y = {_short(label)} is a new label, but all {labels.capacity} classes are taken"
        else:
            detail = (
                f"y is {_kind(label)}, but this stream's labels are {labels.mode}s (the first label decided)"
            )
        return Rejection(code, detail)

    def _check_task(self, task: object) -> Rejection | None:
        if task is None:
            return None
        if type(task) is str and not task:
            return Rejection("bad_task", "task is an empty string")
        if self.tasks.reason(task) is None:
            return None
        if type(task) is int and task < 0:
            detail = f"task = {task} is negative"
        elif type(task) is int and task > MAX_TASK:
            detail = f"task = {task} does not fit in 64 bits"
        elif type(task) in (int, str):
            detail = (
                f"task is {_kind(task)}, but this stream's tasks are {self.tasks.mode}s (the first decided)"
            )
        else:
            detail = f"task is {_kind(task)}, expected an integer >= 0 or a string"
        return Rejection("bad_task", detail)


def _check_id(ident: object) -> Rejection | None:
    if ident is None or type(ident) is str:
        return None
    return Rejection("bad_id", f"id is {_kind(ident)}, expected a string")


def _check_ts(ts: object) -> Rejection | None:
    if ts is None or (type(ts) is int and 0 <= ts <= _INT64_MAX):
        return None
    if type(ts) is int:
        return Rejection("bad_ts", f"ts = {ts} is not a non-negative 64-bit count of milliseconds")
    return Rejection("bad_ts", f"ts is {_kind(ts)}, expected an integer (epoch milliseconds)")


def _may_hold_a_boolean(raw: bytes) -> bool:
    """True if ``raw`` spells "true" or "false" somewhere (in a string, too)."""
    if b"u" not in raw and b"l" not in raw:  # "true" holds a u, "false" an l
        return False
    return b"true" in raw or b"false" in raw


def _to_float32(values: list[Any]) -> np.ndarray | None:
    """``values`` as a float32 array, or None if one is not a real number (bools pass as 0/1)."""
    try:
        return np.frombuffer(array("f", values), dtype=np.float32)
    except (TypeError, OverflowError):
        return None


def _first_non_number(values: list[Any]) -> int | None:
    """Index of the first element that is not an int or float (bool is not), or None."""
    if _NUMBER_TYPES.issuperset(map(type, values)):  # C-speed; the loop below runs only on failure
        return None
    return next(i for i, v in enumerate(values) if type(v) not in _NUMBER_TYPES)


def _parse_failure(raw: bytes, exc: orjson.JSONDecodeError) -> Rejection:
    """Say why orjson refused ``raw``; only rejected messages pay for this."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Rejection("not_utf8", f"invalid UTF-8 at byte {bad.start}: {bad.reason}")
    if _has_non_finite(text, exc):
        return Rejection("non_finite", "the message holds NaN, Infinity or a number too large for a double")
    return Rejection("not_json", f"not valid JSON: {_short(exc, 160)}")


def _has_non_finite(text: str, exc: orjson.JSONDecodeError) -> bool:
    """True if ``text`` is JSON except for NaN/Infinity literals or overflowing numbers.

    Python's ``json`` reads those (as nan/inf); orjson, like the RFC, does not. Telling them apart
    from other garbage gives producers a precise reason. The re-parse runs only when one of them
    can be the cause, so most garbage costs a single parse.
    """
    if "NaN" not in text and "Infinity" not in text and "infinity" not in str(exc):
        return False
    seen = False

    def constant(_name: str) -> float:
        nonlocal seen
        seen = True
        return math.nan

    def number(literal: str) -> float:
        nonlocal seen
        value = float(literal)
        seen = seen or not math.isfinite(value)
        return value

    try:
        json.loads(text, parse_constant=constant, parse_float=number)
    except (ValueError, RecursionError):  # RecursionError: deep nesting orjson refused too
        return False
    return seen


def _kind(value: object) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _short(value: object, limit: int = 40) -> str:
    """``repr`` (``str`` for exceptions) capped in length: a detail must stay one short log line."""
    text = str(value) if isinstance(value, BaseException) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encode_example(
    x: Any,
    y: int | str,
    task: int | str | None = None,
    id: str | None = None,
    ts: int | None = None,
) -> bytes:
    """Compact JSON for one example, as producers should send it (and tests build messages).

    ``x`` is written as float32 shortest-repr numbers, so ``decode(encode_example(x, ...)).x`` equals
    ``np.float32(x)`` exactly. Raises ValueError/TypeError for input the decoder would reject for
    its form (a producer bug); capacity and input size are the decoder's to judge.
    """
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "fiu":
        raise ValueError(f"x must be a non-empty 1-D array of numbers, got shape {arr.shape} {arr.dtype}")
    with np.errstate(over="ignore"):
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("x must be finite and within float32's range")
    doc: dict[str, Any] = {"x": arr, "y": _encodable_key("y", y)}
    if task is not None:
        doc["task"] = _encodable_key("task", task)
    if id is not None:
        if not isinstance(id, str):
            raise TypeError(f"id must be a str, got {type(id).__name__}")
        doc["id"] = id
    if ts is not None:
        if isinstance(ts, bool) or not isinstance(ts, int | np.integer) or not 0 <= ts <= _INT64_MAX:
            raise ValueError(f"ts must be an int in 0..2**63-1 (epoch milliseconds), got {ts!r}")
        doc["ts"] = int(ts)
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def _encodable_key(name: str, value: object) -> int | str:
    """A label or task as a plain int (numpy ints too) >= 0 or a non-empty str."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer | str):
        raise TypeError(f"{name} must be an int or a str, got {type(value).__name__}")
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{name} must not be empty")
        return value
    number = int(value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    return number


def message_json_schema() -> dict[str, Any]:
    """The message contract as a JSON Schema (draft 2020-12), e.g. for a schema registry or docs."""
    text = resources.files("streamlearn").joinpath("schemas/example.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema

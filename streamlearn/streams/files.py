"""Streams of labelled examples from users' own files, as message dicts (DESIGN.md §2).

Readers here only turn rows into ``{"x": [...], "y": ..., "task"?, "id"?, "ts"?}`` dicts; whether a
message is acceptable (length, finite numbers, label capacity) is the daemon decoder's decision, so
that a file and a Kafka topic are judged by the same rules. What *is* checked here is what only the
reader can report well: which file, line and column could not be parsed at all.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamlearn.streams.benchmark import TaskStream

Message = dict[str, Any]

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv",)
LABEL_COLUMNS = ("y", "label")

# int() alone would also accept "1_000" and non-ASCII digits, which nobody means as a class id.
_INT_PATTERN = re.compile(r"[+-]?[0-9]+")
# utf-8-sig: spreadsheet exports often start with a byte-order mark that would otherwise
# become part of the first column's name.
_ENCODING = "utf-8-sig"


def read_examples(path: str | os.PathLike[str]) -> Iterator[Message]:
    """Yield the examples of a ``.jsonl``/``.json``/``.ndjson`` or ``.csv`` file as message dicts.

    The extension is checked now, so a wrong file fails at the call; the file itself is read
    lazily, one line at a time, so files larger than memory stream fine.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(file)
    if suffix in CSV_SUFFIXES:
        return _read_csv(file)
    known = ", ".join(JSONL_SUFFIXES + CSV_SUFFIXES)
    raise ValueError(f"{file}: unsupported extension {file.suffix!r}; expected one of {known}")


def examples_from_task_stream(stream: TaskStream) -> Iterator[Message]:
    """Yield every training example of ``stream``, task by task, as the messages a producer would send."""
    for task in stream.tasks:
        rows = task.train_x.tolist()  # one conversion per task, not one per example
        for i, (x, y) in enumerate(zip(rows, task.train_y.tolist(), strict=True)):
            yield {"x": x, "y": y, "task": task.index, "id": f"{stream.name}-t{task.index}-{i}"}


def _read_jsonl(path: Path) -> Iterator[Message]:
    line_no = 0
    try:
        with path.open(encoding=_ENCODING) as lines:
            for line_no, line in enumerate(lines, start=1):
                if line.strip():
                    yield _parse_json_line(line, path, line_no)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text after line {line_no} ({exc.reason})") from exc


def _parse_json_line(line: str, path: Path, line_no: int) -> Message:
    try:
        message = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}:{line_no}: not valid JSON ({exc.msg}); expected one JSON object per line"
        ) from exc
    # The one shape check made here: the declared result is a dict, and a list or number
    # would only fail later with a less helpful message.
    if not isinstance(message, dict):
        raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(message).__name__}")
    return message


def _read_csv(path: Path) -> Iterator[Message]:
    try:
        with path.open(encoding=_ENCODING, newline="") as lines:
            reader = csv.reader(lines)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}: empty file; a CSV needs a header row")
            layout = _CsvLayout.from_header(header, path)
            for row in reader:
                if row:  # csv yields [] for a blank line
                    yield layout.message(row, path, reader.line_num)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def _parse_float(cell: str, where: str, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise ValueError(f"{where}: column {column!r}: {cell!r} is not a number") from None


def _int_or_str(cell: str) -> int | str:
    return int(cell) if _INT_PATTERN.fullmatch(cell) else cell


def _parse_int(cell: str, where: str, column: str) -> int:
    if not _INT_PATTERN.fullmatch(cell):
        raise ValueError(f"{where}: column {column!r}: {cell!r} is not an integer")
    return int(cell)


def _parse_task(cell: str, _where: str, _column: str) -> int | str:
    return _int_or_str(cell)


def _parse_id(cell: str, _where: str, _column: str) -> str:
    return cell


# How each optional column becomes a message field, typed as the message contract says;
# the dict order is also the order of the keys in each message.
_OPTIONAL_PARSERS: dict[str, Callable[[str, str, str], int | str]] = {
    "task": _parse_task,
    "id": _parse_id,
    "ts": _parse_int,
}


@dataclass(frozen=True)
class _CsvLayout:
    """Which header column feeds which message field, worked out once per file."""

    n_columns: int
    label: int
    optional: dict[str, int]
    features: list[tuple[str, int]]

    @classmethod
    def from_header(cls, header: list[str], path: Path) -> _CsvLayout:
        names = [name.strip() for name in header]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"{path}: duplicate column names in header: {duplicates}")
        labels = [name for name in LABEL_COLUMNS if name in names]
        if len(labels) != 1:
            found = "both" if labels else "neither"
            raise ValueError(
                f"{path}: header needs exactly one label column of {LABEL_COLUMNS}, found {found}"
            )
        optional = {name: names.index(name) for name in _OPTIONAL_PARSERS if name in names}
        reserved = {labels[0], *optional}
        features = [(name, i) for i, name in enumerate(names) if name not in reserved]
        if not features:
            raise ValueError(f"{path}: header has no feature columns besides {sorted(reserved)}")
        return cls(len(names), names.index(labels[0]), optional, features)

    def message(self, row: list[str], path: Path, line_no: int) -> Message:
        where = f"{path}:{line_no}"
        if len(row) != self.n_columns:
            raise ValueError(f"{where}: {len(row)} fields, but the header has {self.n_columns}")
        message: Message = {
            "x": [_parse_float(row[i], where, name) for name, i in self.features],
            "y": _int_or_str(row[self.label].strip()),
        }
        for name, i in self.optional.items():
            cell = row[i].strip()
            if cell:  # an empty optional cell means "not given", so sparse columns work
                message[name] = _OPTIONAL_PARSERS[name](cell, where, name)
        return message

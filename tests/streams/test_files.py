"""Reading users' example files (JSONL, CSV) and turning a benchmark stream into messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamlearn.streams import load_stream, read_examples
from streamlearn.streams.files import examples_from_task_stream

MESSAGES: list[dict[str, Any]] = [
    {"x": [0.0, 0.5, 1.0], "y": 3, "task": 0, "id": "a", "ts": 1700000000000},
    {"x": [0.1, 0.2, 0.30000000000000004], "y": "cat"},
    {"x": [-1.5, 2.0, 1e-7], "y": 0, "task": "night"},
]


def _write_jsonl(path: Path, messages: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(m) + "\n" for m in messages), encoding="utf-8")
    return path


# --- JSONL --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".ndjson", ".JSONL"])
def test_jsonl_round_trip(tmp_path: Path, suffix: str) -> None:
    path = _write_jsonl(tmp_path / f"examples{suffix}", MESSAGES)
    assert list(read_examples(path)) == MESSAGES


def test_jsonl_skips_blank_lines_and_passes_fields_through(tmp_path: Path) -> None:
    path = tmp_path / "examples.jsonl"
    # no validation at this stage: a wrong-length x or extra key reaches the decoder unchanged
    path.write_text('\n{"x": [1], "y": 1, "extra": true}\n   \n{"y": "no x"}\n\n', encoding="utf-8")
    assert list(read_examples(str(path))) == [{"x": [1], "y": 1, "extra": True}, {"y": "no x"}]


def test_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"x": [1.0], "y": 1}\n\n{"x": [1.0], "y": \n', encoding="utf-8")
    examples = read_examples(path)
    assert next(examples) == {"x": [1.0], "y": 1}
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: not valid JSON"):
        next(examples)


def test_jsonl_non_object_line_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text("[1, 2, 3]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"list\.jsonl:1: expected a JSON object"):
        list(read_examples(path))


def test_non_utf8_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"x": [1], "y": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.jsonl: not UTF-8"):
        list(read_examples(path))


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_round_trip_with_optional_columns(tmp_path: Path) -> None:
    path = tmp_path / "examples.csv"
    path.write_text(
        "f0,task,f1,y,id,ts,f2\n"
        "0.0,0,0.5,3,a,1700000000000,1.0\n"
        "0.1,,0.2,cat,,,0.30000000000000004\n"
        "-1.5,night,2.0,0,,,1e-7\n",
        encoding="utf-8",
    )
    assert list(read_examples(path)) == MESSAGES


def test_csv_label_column_named_label_and_feature_order(tmp_path: Path) -> None:
    path = tmp_path / "examples.csv"
    # a byte-order mark, as spreadsheet exports write, must not end up in the first column's name
    path.write_text("\ufeffb,label,a\n2,7,1\n\n5,-1,4\n", encoding="utf-8")
    assert list(read_examples(path)) == [{"x": [2.0, 1.0], "y": 7}, {"x": [5.0, 4.0], "y": -1}]


def test_csv_labels_that_are_not_plain_integers_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "examples.csv"
    path.write_text("x0,y\n1,3.0\n1,1_000\n1, dog \n", encoding="utf-8")
    assert [m["y"] for m in read_examples(path)] == ["3.0", "1_000", "dog"]


def test_csv_bad_number_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("pixel_a,pixel_b,y\n1,2,0\n3,oops,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.csv:3: column 'pixel_b': 'oops' is not a number"):
        list(read_examples(path))


def test_csv_bad_timestamp_names_the_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("f,y,ts\n1,0,yesterday\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.csv:2: column 'ts'"):
        list(read_examples(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "needs a header row"),
        ("a,b\n1,2\n", "exactly one label column"),
        ("a,y,label\n1,2,3\n", "exactly one label column"),
        ("a,a,y\n1,2,3\n", "duplicate column"),
        ("y,task\n1,2\n", "no feature columns"),
        ("a,y\n1,2,3\n", "3 fields, but the header has 2"),
    ],
    ids=["empty", "no-label", "two-labels", "duplicate", "no-features", "ragged-row"],
)
def test_csv_structural_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"data\.csv") as info:
        list(read_examples(path))
    assert message in str(info.value)


# --- dispatch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["examples.txt", "examples.parquet", "examples"])
def test_unknown_extension_fails_at_the_call(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="unsupported extension"):
        read_examples(tmp_path / name)  # not iterated: the check must not wait for the first item


# --- benchmark stream as messages -------------------------------------------------------------


def test_examples_from_task_stream(tmp_path: Path) -> None:
    stream = load_stream("permuted-mnist-10k", n_tasks=2)
    messages = list(examples_from_task_stream(stream))
    assert len(messages) == 2000
    first, later = messages[0], messages[1000 + 7]
    assert first["id"] == "permuted-mnist-10k-t0-0" and first["task"] == 0
    assert later["id"] == "permuted-mnist-10k-t1-7" and later["task"] == 1
    assert type(first["y"]) is int and first["y"] == int(stream.tasks[0].train_y[0])
    assert all(type(v) is float for v in first["x"])
    np.testing.assert_array_equal(np.array(later["x"], dtype=np.float32), stream.tasks[1].train_x[7])
    # through a file and back, nothing is lost: float32 values survive the JSON float text exactly
    path = _write_jsonl(tmp_path / "stream.jsonl", messages[:50])
    assert list(read_examples(path)) == messages[:50]

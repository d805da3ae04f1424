"""Decoder: valid messages become Examples, every malformed kind becomes the right Rejection.

The hypothesis tests are the "never raises" guarantee: arbitrary bytes and arbitrary JSON must
always come back as an Example or a Rejection with a declared reason, never as an exception.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streamlearn.ingest.decode import (
    REASONS,
    Decoder,
    Example,
    Parsed,
    Rejection,
    encode_example,
    message_json_schema,
)
from streamlearn.ingest.labels import LabelMap, TaskMap

N = 4
CAPACITY = 10


def _decoder(n: int = N, capacity: int = CAPACITY, max_bytes: int = 1_048_576) -> Decoder:
    return Decoder(n, LabelMap(capacity), TaskMap(), max_bytes=max_bytes)


def _msg(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _ok(result: Example | Rejection) -> Example:
    assert isinstance(result, Example), result
    return result


# --- valid messages ---------------------------------------------------------------------------


def test_minimal_message_with_int_and_float_values() -> None:
    ex = _ok(_decoder().decode(b'{"x":[1,2.5,-3,0],"y":7}'))
    assert ex.x.dtype == np.float32 and ex.x.shape == (N,)
    np.testing.assert_array_equal(ex.x, np.array([1, 2.5, -3, 0], dtype=np.float32))
    assert (ex.y, ex.label, ex.task, ex.id, ex.ts) == (7, 7, None, None, None)


def test_all_optional_fields_and_unknown_keys_ignored() -> None:
    raw = _msg(x=[0.5] * N, y=3, id="img-1", task=2, ts=1_700_000_000_000, source="cam", v={"a": [1]})
    ex = _ok(_decoder().decode(raw))
    assert (ex.y, ex.task, ex.id, ex.ts) == (3, 2, "img-1", 1_700_000_000_000)


def test_null_optional_fields_mean_absent() -> None:
    ex = _ok(_decoder().decode(_msg(x=[0] * N, y=0, id=None, task=None, ts=None)))
    assert (ex.task, ex.id, ex.ts) == (None, None, None)


def test_string_labels_and_tasks_get_indices_in_order_of_first_appearance() -> None:
    dec = _decoder()
    seen = [
        _ok(dec.decode(_msg(x=[1] * N, y=label, task=task)))
        for label, task in [("cat", "day"), ("dog", "night"), ("cat", "night")]
    ]
    assert [(e.y, e.label, e.task) for e in seen] == [(0, "cat", 0), (1, "dog", 1), (0, "cat", 1)]
    assert dec.labels.names() == ["cat", "dog"]
    assert dec.tasks.name(1) == "night"


def test_messages_with_and_without_a_boolean_literal_decode_alike() -> None:
    # Two conversion paths: without the bytes "true"/"false" no boolean can be present, so the
    # type scan is skipped. Both must give the same array, and a boolean in x is still refused.
    dec = _decoder()
    scanned = _ok(dec.decode(b'{"x":[0.1,2,-3.5,4e-7],"y":1,"id":"false"}'))  # scanned: "false"
    fast = _ok(dec.decode(b'{"x":[0.1,2,-3.5,0.0000004],"y":1}'))
    exponent = _ok(dec.decode(b'{"x":[0.1,2,-3.5,4e-7],"y":1}'))  # an "e" no longer forces the scan
    np.testing.assert_array_equal(scanned.x, fast.x)
    np.testing.assert_array_equal(exponent.x, fast.x)
    np.testing.assert_array_equal(fast.x, np.array([0.1, 2, -3.5, 4e-7], dtype=np.float32))
    assert _ok(dec.decode(b'{"x":[1,2,3,4],"y":1,"id":"true"}')).id == "true"
    for literal in (b"true", b"false"):
        bad = dec.decode(b'{"x":[1,2,3,' + literal + b'],"y":1}')
        assert isinstance(bad, Rejection) and bad.reason == "bad_x", bad


def test_parsing_a_poll_first_then_finishing_in_order_equals_decoding_one_by_one() -> None:
    # The daemon parses a poll's messages in one go and finishes them in order: the maps (which
    # decide label_capacity_exceeded, label_type_mismatch and the indices) see the same order.
    stream = [
        _msg(x=[1] * N, y="cat", task="day"),
        _msg(x=[1] * N, y="dog"),
        b"not json",
        _msg(x=[1, 2, 3], y="cat"),  # wrong_length: refused by parse, before the label
        _msg(x=[1] * N, y="emu", task=3),  # bad_task after a string task: refused by finish
        _msg(x=[1] * N, y="emu"),  # the third label: the map is full (capacity 3) only after it
        _msg(x=[1] * N, y="fox"),
        _msg(x=[1] * N, y=1),  # label_type_mismatch
        _msg(x=[1] * N, y="dog", task="night"),
        None,
    ]
    one, two = _decoder(capacity=3), _decoder(capacity=3)  # a decoder per side
    one_by_one = [one.decode(raw) for raw in stream]
    parsed = [two.parse(raw) for raw in stream]
    empty = (_decoder(capacity=3).labels.state_dict(), _decoder().tasks.state_dict())
    assert (two.labels.state_dict(), two.tasks.state_dict()) == empty  # parsing writes no map
    finished = [two.finish(p) if isinstance(p, Parsed) else p for p in parsed]
    assert [type(r) for r in finished] == [type(r) for r in one_by_one]
    for a, b in zip(one_by_one, finished, strict=True):
        if isinstance(a, Rejection):
            assert a == b
        else:
            assert isinstance(b, Example)
            assert (a.y, a.label, a.task, a.id, a.ts) == (b.y, b.label, b.task, b.id, b.ts)
            np.testing.assert_array_equal(a.x, b.x)
    assert [r.reason for r in finished if isinstance(r, Rejection)] == [
        "not_json",
        "wrong_length",
        "bad_task",
        "label_capacity_exceeded",
        "label_type_mismatch",
        "empty",
    ]
    assert two.labels.names() == ["cat", "dog", "emu"]
    assert (two.tasks.name(0), two.tasks.name(1)) == ("day", "night")
    assert (two.labels.state_dict(), two.tasks.state_dict()) == (
        one.labels.state_dict(),
        one.tasks.state_dict(),
    )


def test_a_leading_utf8_byte_order_mark_is_skipped() -> None:
    # RFC 8259 §8.1 lets a parser ignore it, and Windows/.NET serialisers write one.
    raw = _msg(x=[1, 2, 3, 4], y="cat", id="bom-1")
    plain = _ok(_decoder().decode(raw))
    for marked in (b"\xef\xbb\xbf" + raw, bytearray(b"\xef\xbb\xbf" + raw)):
        ex = _ok(_decoder().decode(marked))  # type: ignore[arg-type]
        np.testing.assert_array_equal(ex.x, plain.x)
        assert (ex.y, ex.label, ex.id) == (plain.y, "cat", "bom-1")


def test_non_bytes_buffers_are_accepted() -> None:
    raw = b'{"x":[1,2,3,4],"y":1}'
    assert _ok(_decoder().decode(bytearray(raw))).y == 1
    assert _ok(_decoder().decode(memoryview(raw))).y == 1  # type: ignore[arg-type]


# --- malformed messages -----------------------------------------------------------------------

X = [0.0, 1.0, 2.0, 3.0]
MALFORMED: list[tuple[str, bytes | None, str]] = [
    ("tombstone", None, "empty"),
    ("zero bytes", b"", "empty"),
    ("not json", b"hello", "not_json"),
    ("truncated json", b'{"x":[0,1,2,3],"y":', "not_json"),
    ("utf8 bom alone", b"\xef\xbb\xbf", "empty"),
    ("utf8 bom twice", b'\xef\xbb\xbf\xef\xbb\xbf{"x":[0,1,2,3],"y":1}', "not_json"),
    ("utf8 bom after whitespace", b' \xef\xbb\xbf{"x":[0,1,2,3],"y":1}', "not_json"),
    ("utf16 bom", b'\xff\xfe{\x00"\x00', "not_utf8"),
    ("lone surrogate escape", b'{"x":[0,1,2,3],"y":1,"id":"\\ud800"}', "not_json"),
    ("invalid utf8", b'{"x":[0,1,2,3],"y":"caf\xe9"}', "not_utf8"),
    ("json array", b"[0,1,2,3]", "not_object"),
    ("json string", b'"x"', "not_object"),
    ("x missing", _msg(y=1), "missing_x"),
    ("x a string", _msg(x="0,1,2,3", y=1), "bad_x"),
    ("x null", _msg(x=None, y=1), "bad_x"),
    ("x an object", _msg(x={"0": 1}, y=1), "bad_x"),
    ("string inside x", _msg(x=[0, "1", 2, 3], y=1), "bad_x"),
    ("bool inside x", _msg(x=[0, 1, True, 3], y=1), "bad_x"),
    ("false inside x", _msg(x=[0, 1, False, 3], y=1), "bad_x"),
    ("null inside x", _msg(x=[0, 1, None, 3], y=1), "bad_x"),
    ("array inside x", _msg(x=[0, [1], 2, 3], y=1), "bad_x"),
    ("x too short", _msg(x=X[:3], y=1), "wrong_length"),
    ("x too long", _msg(x=[*X, 4.0], y=1), "wrong_length"),
    ("x empty", _msg(x=[], y=1), "wrong_length"),
    ("NaN literal", b'{"x":[0,NaN,2,3],"y":1}', "non_finite"),
    ("Infinity literal", b'{"x":[0,1,Infinity,3],"y":1}', "non_finite"),
    ("-Infinity literal", b'{"x":[0,1,2,-Infinity],"y":1}', "non_finite"),
    ("overflowing double", b'{"x":[0,1e400,2,3],"y":1}', "non_finite"),
    ("beyond float32", b'{"x":[0,1,2,-1e39],"y":1}', "non_finite"),
    ("y missing", _msg(x=X), "missing_y"),
    ("y null", _msg(x=X, y=None), "bad_y"),
    ("y float", _msg(x=X, y=1.5), "bad_y"),
    ("y integral float", _msg(x=X, y=1.0), "bad_y"),
    ("y bool", _msg(x=X, y=True), "bad_y"),
    ("y list", _msg(x=X, y=[1]), "bad_y"),
    ("y empty string", _msg(x=X, y=""), "bad_y"),
    ("y NaN", b'{"x":[0,1,2,3],"y":NaN}', "non_finite"),
    ("label out of range", _msg(x=X, y=CAPACITY), "label_out_of_range"),
    ("label negative", _msg(x=X, y=-1), "label_out_of_range"),
    ("task negative", _msg(x=X, y=1, task=-1), "bad_task"),
    ("task too big", _msg(x=X, y=1, task=2**63), "bad_task"),
    ("task float", _msg(x=X, y=1, task=1.5), "bad_task"),
    ("task bool", _msg(x=X, y=1, task=False), "bad_task"),
    ("task empty", _msg(x=X, y=1, task=""), "bad_task"),
    ("id not a string", _msg(x=X, y=1, id=17), "bad_id"),
    ("id a list", _msg(x=X, y=1, id=["a"]), "bad_id"),
    ("ts a string", _msg(x=X, y=1, ts="2024-01-01"), "bad_ts"),
    ("ts a float", _msg(x=X, y=1, ts=1.7e12), "bad_ts"),
    ("ts negative", _msg(x=X, y=1, ts=-1), "bad_ts"),
]


@pytest.mark.parametrize(
    ("raw", "reason"), [(r, c) for _, r, c in MALFORMED], ids=[k for k, _, _ in MALFORMED]
)
def test_malformed_message_is_rejected_with_its_reason(raw: bytes | None, reason: str) -> None:
    dec = _decoder()
    result = dec.decode(raw)
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result.detail
    assert reason in REASONS
    assert result.detail and "\n" not in result.detail and len(result.detail) < 200
    assert dec.labels.mode is None and dec.tasks.mode is None  # nothing registered


def test_every_reason_has_a_test() -> None:
    # The table plus the tests below that need state or odd input; a new reason code fails this
    # until someone writes a message that triggers it.
    elsewhere = {"oversized", "label_type_mismatch", "label_capacity_exceeded", "not_bytes"}
    assert {c for _, _, c in MALFORMED} | elsewhere == set(REASONS) - {"internal_error"}
    assert len(MALFORMED) >= 40


def test_oversized_is_refused_before_parsing() -> None:
    dec = _decoder(max_bytes=64)
    raw = _msg(x=X, y=1, pad="p" * 64)
    assert len(raw) > 64
    assert dec.decode(raw) == Rejection("oversized", f"the message is {len(raw)} bytes, the limit is 64")
    assert _reason(dec.decode(b"{" * 65)) == "oversized"
    assert _ok(dec.decode(_msg(x=X, y=1))).y == 1


def test_wrong_length_detail_names_both_lengths() -> None:
    result = _decoder(n=784).decode(_msg(x=[0.0] * 783, y=1))
    assert result == Rejection("wrong_length", "x has 783 values, expected 784")


def test_label_mode_and_capacity_rejections_need_state() -> None:
    dec = _decoder(capacity=2)
    for label in ("a", "b"):
        _ok(dec.decode(_msg(x=X, y=label)))
    assert _reason(dec.decode(_msg(x=X, y="c"))) == "label_capacity_exceeded"
    assert _reason(dec.decode(_msg(x=X, y=1))) == "label_type_mismatch"
    assert _ok(dec.decode(_msg(x=X, y="b"))).y == 1

    tasks = _decoder()
    _ok(tasks.decode(_msg(x=X, y=1, task=3)))
    assert _reason(tasks.decode(_msg(x=X, y=1, task="three"))) == "bad_task"


def _reason(result: Example | Rejection) -> str:
    assert isinstance(result, Rejection), result
    return result.reason


@pytest.mark.parametrize(
    "raw",
    [
        _msg(x=[0, 1, True, 3], y="new"),  # bad x
        _msg(x=X, y="new", task=-1),  # bad task
        _msg(x=X, y="new", id=5),  # bad id
        _msg(x=X, y="new", ts="now"),  # bad ts
        b'{"x":[0,1,2,NaN],"y":"new"}',
    ],
)
def test_rejected_message_registers_neither_label_nor_task(raw: bytes) -> None:
    dec = _decoder()
    assert isinstance(dec.decode(raw), Rejection)
    assert dec.labels.peek("new") is None and dec.labels.names() == []
    assert dec.labels.mode is None and dec.tasks.mode is None
    # the stream's first *accepted* label still decides the mode
    assert _ok(dec.decode(_msg(x=X, y=4))).y == 4
    assert dec.labels.mode == "int"


def test_bad_task_does_not_register_a_new_task_either() -> None:
    dec = _decoder()
    assert isinstance(dec.decode(_msg(x=X, y=CAPACITY, task="t1")), Rejection)
    assert dec.tasks.peek("t1") is None and dec.tasks.mode is None


def test_reasons_are_unique_snake_case() -> None:
    assert len(set(REASONS)) == len(REASONS)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", r) for r in REASONS)


@pytest.mark.parametrize("raw", ["text", 12, ["x"], object()])
def test_non_bytes_input_is_a_rejection_not_an_exception(raw: Any) -> None:
    assert _reason(_decoder().decode(raw)) == "not_bytes"


def test_a_decoder_bug_becomes_an_internal_error_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    dec = _decoder()

    def broken(label: object) -> str | None:
        raise RuntimeError("boom")

    monkeypatch.setattr(dec.labels, "reason", broken)
    result = dec.decode(_msg(x=X, y=1))
    assert result == Rejection("internal_error", "decoder bug: RuntimeError: boom")
    assert dec.labels.mode is None


def test_decoder_arguments_are_checked() -> None:
    for n, max_bytes in [(0, 10), (4, 0), (4.0, 10)]:
        with pytest.raises(ValueError):
            Decoder(n, LabelMap(2), TaskMap(), max_bytes=max_bytes)  # type: ignore[arg-type]


# --- encode_example ---------------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    rng = np.random.default_rng(0)
    dec = _decoder(n=784)
    for i in range(20):
        x = rng.standard_normal(784) * 10.0 ** rng.integers(-8, 8)
        raw = encode_example(x, f"class-{i % 3}", task=i % 2, id=f"m{i}", ts=1_700_000_000_000 + i)
        assert b" " not in raw  # compact
        ex = _ok(dec.decode(raw))
        np.testing.assert_array_equal(ex.x, x.astype(np.float32))  # exact, not approximate
        expected = (i % 3, f"class-{i % 3}", i % 2, f"m{i}", 1_700_000_000_000 + i)
        assert (ex.y, ex.label, ex.task, ex.id, ex.ts) == expected


def test_encode_minimal_and_int_inputs() -> None:
    raw = encode_example([1, 2, 3, 4], np.int64(2))
    assert json.loads(raw) == {"x": [1.0, 2.0, 3.0, 4.0], "y": 2}
    assert _ok(_decoder().decode(raw)).y == 2


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"x": [1.0, math.nan], "y": 1}, ValueError),
        ({"x": [1.0, 1e39], "y": 1}, ValueError),
        ({"x": [[1.0], [2.0]], "y": 1}, ValueError),
        ({"x": ["1"], "y": 1}, ValueError),
        ({"x": [], "y": 1}, ValueError),
        ({"x": [1.0], "y": True}, TypeError),
        ({"x": [1.0], "y": 1.0}, TypeError),
        ({"x": [1.0], "y": -1}, ValueError),
        ({"x": [1.0], "y": ""}, ValueError),
        ({"x": [1.0], "y": 1, "task": -2}, ValueError),
        ({"x": [1.0], "y": 1, "id": 3}, TypeError),
        ({"x": [1.0], "y": 1, "ts": 1.5}, ValueError),
    ],
)
def test_encode_refuses_what_the_decoder_would_reject(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        encode_example(**kwargs)


# --- JSON Schema ------------------------------------------------------------------------------


def _validator() -> Any:
    schema = message_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_accepts_good_messages_including_its_own_examples() -> None:
    validator = _validator()
    schema = message_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "deployment-specific" in schema["properties"]["x"]["description"]
    good = [
        *schema["examples"],
        json.loads(encode_example([0.5, 1, -2], "cat", task="t", id="a", ts=5)),
        {"x": [1], "y": 0, "extra": {"ignored": True}, "task": None},
    ]
    for doc in good:
        assert list(validator.iter_errors(doc)) == [], doc
    # and the decoder (with the matching input size) accepts the schema's examples too
    for doc in schema["examples"]:
        _ok(_decoder(n=len(doc["x"])).decode(json.dumps(doc).encode()))


@pytest.mark.parametrize(
    "doc",
    [
        {"x": [1.0]},
        {"y": 1},
        {"x": [], "y": 1},
        {"x": [1.0, "2"], "y": 1},
        {"x": [1.0, True], "y": 1},
        {"x": "1,2", "y": 1},
        {"x": [1.0], "y": -1},
        {"x": [1.0], "y": 1.5},
        {"x": [1.0], "y": True},
        {"x": [1.0], "y": ""},
        {"x": [1.0], "y": 1, "task": -1},
        {"x": [1.0], "y": 1, "id": 5},
        {"x": [1.0], "y": 1, "ts": "2024"},
        [1.0, 2.0],
    ],
)
def test_schema_rejects_bad_messages(doc: Any) -> None:
    assert not _validator().is_valid(doc)


def test_message_json_schema_returns_a_fresh_copy() -> None:
    first = message_json_schema()
    first["required"].append("z")
    assert message_json_schema()["required"] == ["x", "y"]


# --- property-based: never raises, invariants hold --------------------------------------------

# Case budgets: a few seconds together here; `pytest --hypothesis-show-statistics` reports what ran.
FUZZ_CASES = {"bytes": 1000, "json": 700, "dicts": 1000}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
# keys the decoder looks at are drawn often, so nested and top-level objects exercise real fields
json_keys = st.sampled_from(["x", "y", "task", "id", "ts"]) | st.text(max_size=3)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(json_keys, inner, max_size=4),
    max_leaves=8,
)
numbers = st.integers(-(2**70), 2**70) | st.floats(width=64)
# x: usually exactly right (so Examples happen), sometimes subtly wrong, sometimes anything
good_x = st.lists(st.floats(-1e6, 1e6) | st.integers(-1000, 1000), min_size=N, max_size=N)
x_values = st.one_of(
    good_x,
    good_x,  # listed twice: one_of picks a branch uniformly
    st.lists(numbers | st.booleans() | st.none() | st.text(max_size=2), min_size=N - 1, max_size=N + 1),
    json_values,
)
y_values = st.integers(0, CAPACITY - 1) | st.integers(-2, CAPACITY + 2) | st.text(max_size=3) | json_values
# optional fields: mostly absent or well-typed, so that a fair share of cases decode to Examples
tasks = st.none() | st.integers(0, 5) | st.text(max_size=2) | json_values
idents = st.none() | st.text(max_size=5) | json_values
stamps = st.none() | st.integers(0, 2**63 - 1) | json_values

SEEDS = [b'{"x":[0,1.5,-2,3e-3],"y":1}', b'{"x":[1,2,3,4],"y":"cat","task":"t","id":"a","ts":5}']
JSON_BYTES = b'{}[]",:0123456789.eE-+ truefalsnullNaNIity\\'


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes replaced, inserted or deleted: malformed in realistic ways."""
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.sampled_from(JSON_BYTES) | st.integers(0, 255))
        if op == "insert" or at == len(raw):
            raw.insert(at, byte)
        elif op == "replace":
            raw[at] = byte
        else:
            del raw[at]
    return bytes(raw)


def _check_invariants(dec: Decoder, result: Example | Rejection) -> None:
    assert isinstance(result, Example | Rejection)
    # outcome mix, shown by --hypothesis-show-statistics: proves the fuzz reaches deep checks
    event(result.reason if isinstance(result, Rejection) else "example")
    if isinstance(result, Rejection):
        assert result.reason in REASONS and result.reason != "internal_error", result
        assert isinstance(result.detail, str) and result.detail
        return
    assert result.x.dtype == np.float32 and result.x.shape == (dec.n_inputs,)
    assert np.isfinite(result.x).all()
    assert 0 <= result.y < dec.labels.capacity
    assert dec.labels.peek(result.label) == result.y
    assert result.task is None or result.task >= 0


_FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@settings(max_examples=FUZZ_CASES["bytes"], **_FUZZ)
@given(st.binary(max_size=200) | mutated_messages())
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    dec = _decoder(max_bytes=150)
    _check_invariants(dec, dec.decode(raw))


@settings(max_examples=FUZZ_CASES["json"], **_FUZZ)
@given(json_values, st.booleans())
def test_fuzz_arbitrary_json_values(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    dec = _decoder()
    _check_invariants(dec, dec.decode(raw))


@settings(max_examples=FUZZ_CASES["dicts"], **_FUZZ)
@given(x_values, y_values, tasks, idents, stamps, st.sampled_from([False] * 9 + [True]))
def test_fuzz_messages_with_x_and_y(x: Any, y: Any, task: Any, ident: Any, ts: Any, drop_y: bool) -> None:
    doc: dict[str, Any] = {"x": x, "task": task, "id": ident, "ts": ts}
    if not drop_y:
        doc["y"] = y
    dec = _decoder()
    result = dec.decode(json.dumps(doc).encode())
    _check_invariants(dec, result)
    if isinstance(result, Example):
        # the model sees exactly the numbers that were sent (in float32)
        np.testing.assert_array_equal(result.x, np.asarray(x, dtype=np.float64).astype(np.float32))
        assert result.label == y and result.id == ident and result.ts == ts
    else:
        assert dec.labels.mode is None and dec.tasks.mode is None

"""Request parsing and responses of the prediction API, without a server."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlearn.serving import api

N = 4


def predict(doc: object, max_rows: int = 3) -> api.Rows:
    return api.parse_predict(json.dumps(doc).encode(), n_inputs=N, max_rows=max_rows)


def infer(doc: object, max_rows: int = 3) -> api.Rows:
    return api.parse_infer(json.dumps(doc).encode(), n_inputs=N, max_rows=max_rows)


def test_predict_one_row_and_many() -> None:
    one = predict({"x": [1, 2.5, 0, -1]})
    assert one.single and one.rows.dtype == np.float32 and one.rows.tolist() == [[1, 2.5, 0, -1]]
    many = predict({"instances": [[0, 0, 0, 1], [1, 0, 0, 0]]})
    assert not many.single and many.rows.shape == (2, N)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"", 400, "empty body"),
        (b"{not json", 400, "not valid JSON"),
        (b'{"x": [NaN, 1, 2, 3]}', 400, "not valid JSON"),
        (b"[1, 2, 3, 4]", 400, "JSON object"),
        (b"{}", 400, "exactly one of"),
        (b'{"x": [1,2,3,4], "instances": [[1,2,3,4]]}', 400, "exactly one of"),
        (b'{"x": [1, 2, 3]}', 400, "must hold 4 numbers, got 3"),
        (b'{"x": [[1, 2, 3, 4]]}', 400, "must hold 4 numbers"),
        (b'{"x": [1, "2", 3, 4]}', 400, "only numbers"),
        (b'{"x": [1, null, 3, 4]}', 400, "only numbers"),
        (b'{"x": [true, 0.5, 3, 4]}', 400, "booleans"),
        (b'{"x": [true, false, true, true]}', 400, "booleans"),
        (b'{"x": [1e39, 0, 0, 0]}', 400, "not finite in float32"),
        (b'{"x": "1,2,3,4"}', 400, "array of numbers"),
        (b'{"instances": [[1,2,3,4],[1,2,3]]}', 400, "ragged"),
        (b'{"instances": [[1,2,3]]}', 400, "shape [n, 4]"),
        (b'{"instances": []}', 400, "shape"),
        (b'{"instances": [[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4]]}', 413, "1..3 rows, got 4"),
        (b'{"x": [10000000000000000000000000000000000000000, 1, 2, 3]}', 400, "not finite in float32"),
    ],
)
def test_bad_predict_bodies_are_4xx_with_a_reason(body: bytes, status: int, fragment: str) -> None:
    with pytest.raises(api.ApiError) as err:
        api.parse_predict(body, n_inputs=N, max_rows=3)
    assert err.value.status == status
    assert fragment in err.value.message


def test_infer_accepts_flat_and_nested_data_and_picks_outputs() -> None:
    flat = infer({"inputs": [{"name": "in", "shape": [2, N], "datatype": "FP32", "data": list(range(8))}]})
    nested = infer(
        {
            "inputs": [
                {"name": "in", "shape": [2, N], "datatype": "FP32", "data": [[0, 1, 2, 3], [4, 5, 6, 7]]}
            ]
        }
    )
    assert flat.rows.tolist() == nested.rows.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert flat.outputs == api.INFER_OUTPUTS
    one = infer(
        {
            "id": "r1",
            "inputs": [{"name": "in", "shape": [N], "datatype": "FP64", "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "label"}],
        }
    )
    assert one.rows.shape == (1, N) and one.outputs == ("label",) and one.request_id == "r1"


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({}, "exactly one tensor"),
        ({"inputs": []}, "exactly one tensor"),
        ({"inputs": [{"shape": [1, N], "datatype": "INT8", "data": [1, 2, 3, 4]}]}, "datatype"),
        ({"inputs": [{"shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, "does not end in"),
        ({"inputs": [{"shape": "1x4", "datatype": "FP32", "data": [1, 2, 3, 4]}]}, "shape"),
        ({"inputs": [{"shape": [2, N], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, "holds 4 values"),
        (
            {
                "inputs": [{"shape": [1, N], "datatype": "FP32", "data": [1, 2, 3, 4]}],
                "outputs": [{"name": "z"}],
            },
            "unknown output",
        ),
        ({"inputs": [{"shape": [1, N], "datatype": "FP32", "data": [1, 2, 3, 4]}], "id": 5}, '"id"'),
    ],
)
def test_bad_infer_requests_are_400(doc: object, fragment: str) -> None:
    with pytest.raises(api.ApiError) as err:
        infer(doc)
    assert err.value.status == 400 and fragment in err.value.message


def test_responses_carry_labels_probabilities_and_version() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], dtype=np.float32)
    labels = ("cat", "dog", "eel")
    one = orjson.loads(api.predict_response(probs[:1], api.Rows(probs[:1], single=True), labels, 12))
    assert one["label"] == "dog" and one["class_index"] == 1 and one["model_version"] == 12
    assert one["probabilities"] == pytest.approx({"cat": 0.1, "dog": 0.7, "eel": 0.2})
    rows = api.Rows(np.zeros((2, N), np.float32), request_id="q", outputs=api.INFER_OUTPUTS)
    body, json_length = api.infer_response(probs, rows, labels, 12, "m")
    assert json_length is None  # no binary outputs asked for: all JSON
    out = orjson.loads(body)
    assert out["model_name"] == "m" and out["model_version"] == "12" and out["id"] == "q"
    by_name = {o["name"]: o for o in out["outputs"]}
    assert by_name["label"]["data"] == ["dog", "cat"]
    assert by_name["class_index"]["data"] == [1, 0]
    assert by_name["probabilities"]["shape"] == [2, 3]
    assert by_name["probabilities"]["data"] == pytest.approx(probs.reshape(-1).tolist())


def test_unseen_string_labels_never_win() -> None:
    # two labels seen so far, capacity 3: index 2 has no name yet, so it cannot be the answer
    probs = np.array([[0.2, 0.3, 0.5]], dtype=np.float32)
    out = orjson.loads(api.predict_response(probs, api.Rows(probs, single=True), ("a", "b"), 1))
    assert out["label"] == "b" and set(out["probabilities"]) == {"a", "b"}


def assert_rows_or_4xx(body: bytes) -> None:
    """Both parsers: a valid matrix of finite rows, or an ApiError with a 4xx status; nothing else."""
    for parse in (api.parse_predict, api.parse_infer):
        try:
            rows = parse(body, n_inputs=N, max_rows=3)
        except api.ApiError as exc:
            assert 400 <= exc.status < 500
        else:
            assert rows.rows.shape[1] == N and np.isfinite(rows.rows).all()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_rows_or_a_4xx(body: bytes) -> None:
    assert_rows_or_4xx(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(["x", "instances", "inputs", "shape", "data", "datatype"]), inner, max_size=4
        )
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_arbitrary_json_gives_rows_or_a_4xx(doc: object) -> None:
    body = json.dumps(doc).encode()  # the stdlib writes integers of any size, as a client may
    assert_rows_or_4xx(body)

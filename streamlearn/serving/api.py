"""Request bodies in, response bodies out: the prediction API without the HTTP server.

Two dialects over one model:

- ``POST /predict`` for humans: ``{"x": [...]}`` (one row) or ``{"instances": [[...], ...]}``;
  answers the label, the probability of every label by name, and the model version.
- The Open Inference Protocol (KServe v2 REST): ``POST /v2/models/{name}/infer`` with one FP32
  (or FP64) tensor input of shape ``[n, n_inputs]`` (or ``[n_inputs]``), data flat or nested;
  answers ``probabilities`` (FP32 ``[n, n_classes]``), ``label`` (BYTES ``[n]``) and
  ``class_index`` (INT64 ``[n]``), with ``model_version``. Inputs and outputs may travel as
  binary tensor data instead of JSON (``binary_tensors``: what ``tritonclient.http`` sends).

Every malformed request raises :class:`ApiError` with a 4xx status and a sentence saying what is
wrong; nothing here touches the learner.

>>> x = parse_predict(b'{"x": [0.5, 1.0]}', n_inputs=2, max_rows=4)
>>> x.rows.shape, x.single
((1, 2), True)
>>> parse_predict(b'{"x": [0.5]}', n_inputs=2, max_rows=4)
Traceback (most recent call last):
...
streamlearn.serving.api.ApiError: 400: "x" must hold 2 numbers, got 1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from streamlearn.errors import StreamlearnError
from streamlearn.serving import binary_tensors


class ApiError(StreamlearnError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Rows:
    rows: np.ndarray  # float32 (n, n_inputs)
    single: bool = False  # /predict {"x": ...}: answer one object, not a list
    request_id: str | None = None
    outputs: tuple[str, ...] = ()
    #: the outputs to answer as binary tensor data (``binary_tensors``), not JSON
    binary_outputs: frozenset[str] = frozenset()


INFER_OUTPUTS = ("probabilities", "label", "class_index")


def _load(body: bytes) -> Any:
    if not body:
        raise ApiError(400, "empty body; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body is not valid JSON ({exc.msg}; NaN and Infinity are not JSON)") from None


def _matrix(data: Any, what: str) -> np.ndarray:
    """Nested lists of JSON numbers → float32 array; strings, booleans, nulls and ragged rows refused."""
    if not isinstance(data, list):
        raise ApiError(400, f"{what} must be an array of numbers, got {type(data).__name__}")
    try:
        arr = np.array(data)
    except (ValueError, OverflowError):
        raise ApiError(400, f"{what} is ragged: every row must have the same length") from None
    if arr.dtype.kind not in "iuf":
        if arr.dtype.kind == "b":
            raise ApiError(400, f"{what} holds booleans; expected numbers")
        raise ApiError(400, f"{what} must hold only numbers (no strings, nulls, objects or huge integers)")
    if arr.dtype.kind == "f" and _has_bool(data):
        raise ApiError(400, f"{what} holds booleans; expected numbers")
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
        out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise ApiError(400, f"{what} holds a value that is not finite in float32")
    return out


def _has_bool(data: list[Any]) -> bool:
    # numpy turns [true, 0.5] into [1.0, 0.5]; JSON booleans are not features.
    stack: list[Any] = [data]
    while stack:
        items = stack.pop()
        for v in items:
            if v is True or v is False:
                return True
            if isinstance(v, list):
                stack.append(v)
    return False


def _check_rows(x: np.ndarray, n_inputs: int, max_rows: int, what: str) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != n_inputs:
        raise ApiError(400, f"{what} must have shape [n, {n_inputs}], got {list(x.shape)}")
    if not 1 <= x.shape[0] <= max_rows:
        raise ApiError(
            400 if x.shape[0] == 0 else 413, f"{what} must have 1..{max_rows} rows, got {x.shape[0]}"
        )
    return np.ascontiguousarray(x)


def parse_predict(body: bytes, *, n_inputs: int, max_rows: int) -> Rows:
    doc = _load(body)
    if not isinstance(doc, dict):
        raise ApiError(400, 'expected a JSON object with "x" or "instances"')
    if ("x" in doc) == ("instances" in doc):
        raise ApiError(400, 'give exactly one of "x" (one row) or "instances" (a list of rows)')
    if "x" in doc:
        x = _matrix(doc["x"], '"x"')
        if x.ndim != 1 or x.shape[0] != n_inputs:
            got = x.shape[0] if x.ndim == 1 else f"shape {list(x.shape)}"
            raise ApiError(400, f'"x" must hold {n_inputs} numbers, got {got}')
        return Rows(x.reshape(1, -1), single=True)
    x = _matrix(doc["instances"], '"instances"')
    return Rows(_check_rows(x, n_inputs, max_rows, '"instances"'))


def parse_infer(body: bytes, *, n_inputs: int, max_rows: int, header_length: str | None = None) -> Rows:
    """An infer request; ``header_length``: its ``Inference-Header-Content-Length`` (binary data)."""
    try:
        return _parse_infer(body, n_inputs, max_rows, header_length)
    except ValueError as exc:  # the binary extension's complaints
        raise ApiError(400, str(exc)) from None


def _parse_infer(body: bytes, n_inputs: int, max_rows: int, header_length: str | None) -> Rows:
    body, binary = binary_tensors.split(body, header_length)
    doc = _load(body)
    if not isinstance(doc, dict):
        raise ApiError(400, "expected a JSON object with an inputs list (Open Inference Protocol)")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ApiError(400, '"inputs" must be a list of exactly one tensor object')
    tensor = inputs[0]
    datatype = tensor.get("datatype")
    if datatype not in ("FP32", "FP64"):
        raise ApiError(400, f'input datatype must be "FP32" (or "FP64"), got {datatype!r}')
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise ApiError(400, f'input "shape" must be [n, {n_inputs}] or [{n_inputs}], got {shape!r}')
    if shape[-1] != n_inputs:
        raise ApiError(400, f"input shape {shape} does not end in the model's {n_inputs} inputs")
    need = math.prod(shape)  # Python ints: np.prod wrapped around, so [2**60 + 1, 784] passed as 784
    raw = binary_tensors.input_values(tensor, binary, datatype, need)
    if raw is None:
        data = _matrix(tensor.get("data"), 'input "data"')
    else:
        with np.errstate(over="ignore"):  # FP64 beyond float32 becomes inf, refused just below
            data = raw.astype(np.float32)
        if not np.isfinite(data).all():
            raise ApiError(400, "input binary data holds a value that is not finite in float32")
    if data.size != need:
        raise ApiError(400, f'input "data" holds {data.size} values, shape {shape} needs {need}')
    x = _check_rows(data.reshape(-1, n_inputs), n_inputs, max_rows, "input")
    outputs = INFER_OUTPUTS
    wanted = doc.get("outputs")
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
            raise ApiError(400, '"outputs" must be a list of {"name": ...} objects')
        names = tuple(o.get("name") for o in wanted)
        unknown = [n for n in names if n not in INFER_OUTPUTS]
        if unknown:
            raise ApiError(400, f"unknown output(s) {unknown}; this model has {list(INFER_OUTPUTS)}")
        outputs = names
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ApiError(400, '"id" must be a string')
    binary_out = binary_tensors.wanted_binary(doc, wanted, outputs)
    return Rows(x, request_id=request_id, outputs=outputs, binary_outputs=binary_out)


def _labels_of(probs: np.ndarray, labels: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        # Features of huge magnitude overflow a logit to inf and softmax gives NaN; served as JSON
        # it was null probabilities and the first label as the answer.
        raise ApiError(
            422,
            f"row {int(np.flatnonzero(bad)[0])}: the model's output overflows float32 "
            "(features of this magnitude are far outside anything it learned from)",
        )
    # With string labels only the names seen so far are classes; unseen outputs never win.
    known = probs[:, : len(labels)]
    idx = known.argmax(axis=1)
    return idx, [labels[i] for i in idx]


def predict_response(probs: np.ndarray, rows: Rows, labels: tuple[str, ...], version: int) -> bytes:
    idx, names = _labels_of(probs, labels)
    preds = [
        {
            "label": name,
            "class_index": int(i),
            "probabilities": {lab: float(p) for lab, p in zip(labels, row, strict=False)},
        }
        for name, i, row in zip(names, idx, probs.tolist(), strict=True)
    ]
    if rows.single:
        return orjson.dumps({**preds[0], "model_version": version})
    return orjson.dumps({"predictions": preds, "model_version": version})


def infer_response(
    probs: np.ndarray, rows: Rows, labels: tuple[str, ...], version: int, model_name: str
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary outputs, the length of its JSON header."""
    idx, names = _labels_of(probs, labels)
    n = probs.shape[0]
    tensors = {
        "probabilities": {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [n, probs.shape[1]],
            "data": probs.astype(np.float32).reshape(-1).tolist(),
        },
        "label": {"name": "label", "datatype": "BYTES", "shape": [n], "data": names},
        "class_index": {"name": "class_index", "datatype": "INT64", "shape": [n], "data": idx.tolist()},
    }
    raw, entries = b"", []
    for name in rows.outputs:  # in the order asked; a name asked twice is answered twice
        tensor = dict(tensors[name])
        if name in rows.binary_outputs:
            data = binary_tensors.encode(tensor["datatype"], tensor.pop("data"))
            tensor["parameters"] = {"binary_data_size": len(data)}
            raw += data
        entries.append(tensor)
    out: dict[str, Any] = {"model_name": model_name, "model_version": str(version), "outputs": entries}
    if rows.request_id is not None:
        out["id"] = rows.request_id
    header = orjson.dumps(out)
    return (header + raw, len(header)) if rows.binary_outputs else (header, None)


def model_metadata(
    model_name: str, version: int, learner: str, n_inputs: int, n_classes: int, labels: tuple[str, ...]
) -> bytes:
    return orjson.dumps(
        {
            "name": model_name,
            "versions": [str(version)] if version >= 0 else [],
            "platform": f"streamlearn-{learner}",
            "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, n_inputs]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "class_index", "datatype": "INT64", "shape": [-1]},
            ],
            "parameters": {"labels": list(labels)},
        }
    )


def error_body(message: str) -> bytes:
    """The Open Inference Protocol's error shape, used by every endpoint."""
    return orjson.dumps({"error": message})

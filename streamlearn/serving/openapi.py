"""The OpenAPI 3.1 document of the prediction server, built from its settings (``GET /openapi.json``).

It describes exactly the routes :class:`~streamlearn.serving.http.App` answers: the model name is
part of the paths (the server answers no other name), the row length is the model's ``n_inputs``,
batches hold at most ``serve.max_rows`` rows, and the bearer scheme guards ``/predict`` and
``.../infer`` only when ``serve.auth_token`` is set. Request schemas are what ``api.py`` accepts
where JSON Schema can say it; what it cannot (an infer ``shape`` that must match the number of
``data`` values) is in the descriptions and answered with 400. Every error is ``{"error": "..."}``.

>>> from streamlearn.serving.http import ServerSettings
>>> s = ServerSettings("m", "mer", n_inputs=3, n_classes=2, max_request_bytes=100, max_rows=4)
>>> doc = document(s, ("cat", "dog"))
>>> sorted(doc["paths"])[:3], "security" in doc["paths"]["/predict"]["post"]
(['/metrics', '/openapi.json', '/predict'], False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streamlearn import __version__
from streamlearn.serving.api import INFER_OUTPUTS

if TYPE_CHECKING:
    from streamlearn.serving.http import ServerSettings

Schema = dict[str, Any]

#: Feature values must be finite in float32 (``api._matrix`` refuses the rest): below this bound a
#: number rounds to at most float32's largest (``3.4028234663852886e38``), from it on to infinity.
FLOAT32_BOUND = float(2**128 - 2**103)
REF = "#/components/schemas/"


def _ref(name: str) -> Schema:
    return {"$ref": REF + name}


def _array(items: Schema, lo: int, hi: int | None = None) -> Schema:
    out: Schema = {"type": "array", "items": items, "minItems": lo}
    if hi is not None:
        out["maxItems"] = hi
    return out


def _obj(props: dict[str, Schema], required: Sequence[str] | None = None, *, closed: bool = True) -> Schema:
    out: Schema = {
        "type": "object",
        "properties": props,
        "required": list(props if required is None else required),
    }
    if closed:
        out["additionalProperties"] = False
    return out


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _schemas(s: ServerSettings, labels: Sequence[str]) -> dict[str, Schema]:
    n, k, rows = s.n_inputs, s.n_classes, s.max_rows
    probability: Schema = {"type": "number", "minimum": 0, "maximum": 1}
    class_index: Schema = {"type": "integer", "minimum": 0, "maximum": k - 1}
    label: Schema = {"type": "string", "description": "The label name (labels so far: see examples)."}
    if labels:
        label["examples"] = list(labels)
    prediction = {
        "label": label,
        "class_index": class_index,
        "probabilities": {
            "type": "object",
            "description": "The probability of every label seen so far, by name.",
            "additionalProperties": probability,
            "maxProperties": k,
        },
    }
    # (datatype, rank, item): probabilities [n, n_classes], label and class_index [n]
    tensor_out = {
        "probabilities": ("FP32", 2, probability),
        "label": ("BYTES", 1, {"type": "string"}),
        "class_index": ("INT64", 1, class_index),
    }
    outputs = []
    for name, (dtype, rank, item) in tensor_out.items():
        props = {
            "name": {"const": name},
            "datatype": {"const": dtype},
            "shape": _array({"type": "integer", "minimum": 0}, rank, rank),
            "data": _array(item, 0),
        }
        outputs.append(_obj(props))
    feature = {"type": "number", "exclusiveMinimum": -FLOAT32_BOUND, "exclusiveMaximum": FLOAT32_BOUND}
    return {
        "Error": _obj({"error": {"type": "string", "minLength": 1}}),
        "Row": {**_array(feature, n, n), "description": f"One example: {n} finite float32 numbers."},
        "PredictRequest": {
            "description": 'Exactly one of "x" (one row) or "instances" (a batch); other keys are ignored.',
            "oneOf": [
                {**_obj({"x": _ref("Row")}, closed=False), "not": {"required": ["instances"]}},
                {
                    **_obj({"instances": _array(_ref("Row"), 1, rows)}, closed=False),
                    "not": {"required": ["x"]},
                },
            ],
        },
        "Prediction": _obj(prediction),
        "PredictResponse": {
            "oneOf": [
                _obj({**prediction, "model_version": {"type": "integer"}}),
                _obj(
                    {"predictions": _array(_ref("Prediction"), 1, rows), "model_version": {"type": "integer"}}
                ),
            ]
        },
        "InferRequest": _obj(
            {
                "id": {"type": ["string", "null"], "description": "Echoed back in the response."},
                "inputs": _array(_ref("InferInput"), 1, 1),
                "outputs": {
                    "description": f"Which outputs to answer (default all: {', '.join(INFER_OUTPUTS)}).",
                    "type": ["array", "null"],
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"enum": list(INFER_OUTPUTS)}},
                    },
                },
            },
            ["inputs"],
            closed=False,
        ),
        "InferInput": _obj(
            {
                "name": {"type": "string", "examples": ["input-0"]},
                "datatype": {"enum": ["FP32", "FP64"]},
                "shape": {
                    "description": f"[n, {n}] or [{n}]; n times {n} must be the number of data values.",
                    "oneOf": [
                        {"type": "array", "prefixItems": [{"const": n}], "minItems": 1, "maxItems": 1},
                        {
                            "type": "array",
                            "prefixItems": [{"type": "integer", "minimum": 1, "maximum": rows}, {"const": n}],
                            "minItems": 2,
                            "maxItems": 2,
                        },
                    ],
                },
                "data": {
                    "description": "Row-major values, flat or nested as rows.",
                    "anyOf": [_array(feature, n, n * rows), _array(_ref("Row"), 1, rows)],
                },
            },
            ["datatype", "shape", "data"],
            closed=False,
        ),
        "InferResponse": _obj(
            {
                "model_name": {"const": s.model_name},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": _array({"oneOf": outputs}, 0),
            },
            ["model_name", "model_version", "outputs"],
        ),
        "TensorMetadata": _obj(
            {
                "name": {"type": "string"},
                "datatype": {"type": "string"},
                "shape": _array({"type": "integer", "minimum": -1}, 1),
            }
        ),
        "ModelMetadata": _obj(
            {
                "name": {"const": s.model_name},
                "versions": _array({"type": "string"}, 0, 1),
                "platform": {"const": f"streamlearn-{s.learner}"},
                "inputs": _array(_ref("TensorMetadata"), 1, 1),
                "outputs": _array(_ref("TensorMetadata"), 3, 3),
                "parameters": _obj({"labels": _array({"type": "string"}, 0, k)}),
            }
        ),
        "ServerMetadata": _obj(
            {
                "name": {"const": "streamlearn"},
                "version": {"type": "string"},
                "extensions": _array({"type": "string"}, 0),
            }
        ),
    }


def document(s: ServerSettings, labels: Sequence[str] = (), *, admin: str | None = None) -> dict[str, Any]:
    """The OpenAPI document for a server with these settings (``labels``: the model's, for examples;
    ``admin``: its state-changing action, ``checkpoint`` on the learner or ``reload`` on a replica)."""
    err = _ref("Error")
    auth = s.auth_token is not None
    model = f"/v2/models/{s.model_name}"
    version_param = {
        "name": "model_version",
        "in": "path",
        "required": True,
        "description": "Accepted for KServe clients and ignored: the newest model answers.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }

    def guard(op: Schema, responses: dict[str, Schema]) -> None:
        """With a token configured: the operation needs it, and says so (401 + challenge)."""
        if auth:
            op["security"] = [{"bearer": []}]
            responses["401"] = {
                **_json(err, "Missing or wrong bearer token."),
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            }

    def post(op_id: str, summary: str, request: str, response: str) -> Schema:
        responses = {
            "200": _json(_ref(response), "Predictions of the newest model."),
            "400": _json(err, "Malformed request or Content-Length (the message says what)."),
            "411": _json(err, "No Content-Length (chunked bodies are refused)."),
            "413": _json(err, f"Body over {s.max_request_bytes} bytes or more than {s.max_rows} rows."),
            "422": _json(err, "The model's output overflows float32 for a row (features of huge magnitude)."),
            "503": _json(err, "No model published yet."),
        }
        op: Schema = {
            "operationId": op_id,
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
            "responses": responses,
        }
        guard(op, responses)
        return op

    def get(op_id: str, summary: str, responses: dict[str, Schema]) -> Schema:
        return {"operationId": op_id, "summary": summary, "responses": responses}

    def ready(schema: Schema) -> dict[str, Schema]:
        return {"200": _json(schema, "Ready."), "503": _json(schema, "Not ready: no model yet.")}

    model_ready = ready(_obj({"name": {"const": s.model_name}, "ready": {"type": "boolean"}}))
    model_meta = {"200": _json(_ref("ModelMetadata"), "Inputs, outputs and label names of the model.")}
    infer = post("infer", "Open Inference Protocol (KServe v2) inference.", "InferRequest", "InferResponse")

    def versioned(op: Schema) -> Schema:
        op_id = op["operationId"]
        return {**op, "operationId": f"{op_id}Version", "parameters": [version_param]}

    paths: dict[str, Schema] = {
        "/v2/health/live": {
            "get": get("live", "Liveness.", {"200": _json(_obj({"live": {"const": True}}), "Up.")})
        },
        "/v2/health/ready": {"get": get("ready", "Readiness.", ready(_obj({"ready": {"type": "boolean"}})))},
        "/v2": {
            "get": get(
                "serverMetadata", "Server metadata.", {"200": _json(_ref("ServerMetadata"), "Server.")}
            )
        },
        model: {"get": get("modelMetadata", "Model metadata.", model_meta)},
        f"{model}/ready": {"get": get("modelReady", "Model readiness.", model_ready)},
        f"{model}/infer": {"post": infer},
        f"{model}/versions/{{model_version}}": {
            "get": versioned(get("modelMetadata", "Model metadata.", model_meta))
        },
        f"{model}/versions/{{model_version}}/ready": {
            "get": versioned(get("modelReady", "Model readiness.", model_ready))
        },
        f"{model}/versions/{{model_version}}/infer": {"post": versioned(infer)},
        "/predict": {
            "post": post("predict", "Predict one row or a batch.", "PredictRequest", "PredictResponse")
        },
        "/metrics": {
            "get": get(
                "metrics",
                "Prometheus metrics (the learner's appended on the daemon's server).",
                {
                    "200": {
                        "description": "Text exposition format 0.0.4.",
                        "content": {
                            "text/plain; version=0.0.4; charset=utf-8": {"schema": {"type": "string"}}
                        },
                    }
                },
            )
        },
        "/openapi.json": {
            "get": get("openapi", "This document.", {"200": _json({"type": "object"}, "OpenAPI 3.1.")})
        },
    }
    if admin is not None:
        what = {
            "checkpoint": "Write a checkpoint now and commit its offsets (e.g. before maintenance); "
            "answers once the learner has written it, between two updates.",
            "reload": "Load the newest good checkpoint now instead of at the next poll.",
        }[admin]
        responses: dict[str, Schema] = {
            "200": _json({"type": "object"}, "Done; what was done."),
            "403": _json(err, "Refused: state-changing endpoints need serve.auth_token."),
            "503": _json(err, "The checkpoint could not be written (the learner log says why)."),
            "504": _json(err, "The learner did not answer in time."),
        }
        op: Schema = {"operationId": admin, "summary": what, "responses": responses}
        guard(op, responses)
        paths[f"/v2/admin/{admin}"] = {"post": op}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "streamlearn prediction API",
            "version": __version__,
            "description": f"Model {s.model_name!r}: {s.n_inputs} inputs, {s.n_classes} classes, "
            f"at most {s.max_rows} rows and {s.max_request_bytes} bytes per request.",
        },
        "paths": paths,
        "components": {"schemas": _schemas(s, labels)},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc

"""The OpenAPI 3.1 document of the prediction server, built from its settings (``GET /openapi.json``).

It describes exactly the routes :class:`~streamlearn.serving.app.App` answers (both read
``routes.ROUTES``): the model name is part of the paths (the server answers no other name), the
row length is the model's ``n_inputs``, batches hold at most ``serve.max_rows`` rows, and the
bearer scheme guards ``/predict`` and ``.../infer`` only when ``serve.auth_token`` is set.
Request schemas are what ``api.py`` accepts where JSON Schema can say it; what it cannot (an infer
``shape`` that must match the number of ``data`` values) is in the descriptions and answered
with 400. Every error is ``{"error": "..."}``.

>>> from streamlearn.serving.settings import ServerSettings
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
from streamlearn.serving.routes import ADMIN_SUMMARIES, ROUTES, concrete

if TYPE_CHECKING:
    from streamlearn.serving.settings import ServerSettings

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
        "InferRequest": {
            "description": "JSON, or with the binary tensor data extension (tritonclient's default) "
            "this object as a header of Inference-Header-Content-Length bytes, then the input's "
            'little-endian values; the input then has "parameters": {"binary_data_size": N} and no '
            '"data". Outputs come back binary with "parameters": {"binary_data": true} on them or '
            '"parameters": {"binary_data_output": true} on the request.',
            **_obj(
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
        },
        "InferInput": _obj(
            {
                "name": {"type": "string", "examples": ["input-0"]},
                "datatype": {
                    "enum": ["FP32", "FP64"],
                    "description": "FP64 is accepted and rounded to float32, the model's type; every value "
                    "must be finite in float32.",
                },
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


def _responses(s: ServerSettings, admin: str | None) -> dict[str, dict[str, Schema]]:
    """Each operation's responses, by the name of the handler that answers it (``routes.ROUTES``)."""
    err = _ref("Error")

    def predictions(response: str) -> dict[str, Schema]:
        return {
            "200": _json(_ref(response), "Predictions of the newest model."),
            "400": _json(err, "Malformed request or Content-Length (the message says what)."),
            "408": _json(err, f"The body did not arrive within {s.request_timeout_seconds} s."),
            "411": _json(err, "No Content-Length (chunked bodies are refused)."),
            "413": _json(err, f"Body over {s.max_request_bytes} bytes or more than {s.max_rows} rows."),
            "422": _json(err, "The model's output overflows float32 for a row (features of huge magnitude)."),
            "503": _json(err, "No model published yet."),
        }

    def ready(schema: Schema) -> dict[str, Schema]:
        return {"200": _json(schema, "Ready."), "503": _json(schema, "Not ready: no model yet.")}

    prometheus = {"text/plain; version=0.0.4; charset=utf-8": {"schema": {"type": "string"}}}
    responses = {
        "_live": {"200": _json(_obj({"live": {"const": True}}), "Up.")},
        "_ready": ready(
            _obj(
                {
                    "ready": {"type": "boolean"},
                    "role": {"enum": ["active", "standby", "replica"]},
                    "reason": {"type": "string", "description": "why not, when the model is the cause"},
                },
                required=["ready", "role"],
            )
        ),
        "_metrics": {"200": {"description": "Text exposition format 0.0.4.", "content": prometheus}},
        "_server_meta": {"200": _json(_ref("ServerMetadata"), "Server.")},
        "_model_meta": {"200": _json(_ref("ModelMetadata"), "Inputs, outputs and label names of the model.")},
        "_model_ready": ready(_obj({"name": {"const": s.model_name}, "ready": {"type": "boolean"}})),
        "_infer": {
            **predictions("InferResponse"),
            "200": {
                "description": "Predictions of the newest model; with binary outputs asked for, the "
                "JSON header (Inference-Header-Content-Length bytes) and then their binary tensor data.",
                "content": {
                    "application/json": {"schema": _ref("InferResponse")},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
                "headers": {"Inference-Header-Content-Length": {"schema": {"type": "integer"}}},
            },
        },
        "_predict": predictions("PredictResponse"),
        "_openapi_json": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
        "_page": {
            "200": {
                "description": "The page (HTML).",
                "content": {"text/html; charset=utf-8": {"schema": {"type": "string"}}},
            }
        },
        "_status": {
            "200": _json({"type": "object"}, "The live page's data (see streamlearn/serving/status.py).")
        },
        "_admin": {
            "200": _json({"type": "object"}, "Done; what was done."),
            "403": _json(err, "Refused: state-changing endpoints need serve.auth_token."),
            "503": _json(err, "The checkpoint could not be written (the learner log says why)."),
            "504": _json(err, "The learner did not answer in time."),
        },
    }
    operator = {
        "200": _json({"type": "object"}, "Done."),
        "400": _json(err, "Not a checkpoint name."),
        "403": _json(err, "Refused: state-changing endpoints need serve.auth_token."),
        "503": _json(err, "The learner could not do it (the learner log says why)."),
        "504": _json(err, "The learner did not answer in time."),
    }
    return {**responses, **{h: operator for h in ("_pause", "_resume", "_promote", "_rollback")}}


def document(s: ServerSettings, labels: Sequence[str] = (), *, admin: str | None = None) -> dict[str, Any]:
    """The OpenAPI document for a server with these settings (``labels``: the model's, for examples;
    ``admin``: its state-changing action, ``checkpoint`` on the learner or ``reload`` on a replica;
    None leaves the admin route out)."""
    auth = s.auth_token is not None
    version_param = {
        "name": "model_version",
        "in": "path",
        "required": True,
        "description": "Accepted for KServe clients and ignored: the newest model answers.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
    responses_of = _responses(s, admin)
    paths: dict[str, Schema] = {}
    for route in ROUTES:
        if (route.endpoint == "admin" and admin is None) or (
            route.endpoint == "operator" and admin != "checkpoint"
        ):
            continue
        action = admin or ""
        responses = dict(responses_of[route.handler])
        op: Schema = {
            "operationId": route.operation_id.replace("{admin}", action),
            "summary": ADMIN_SUMMARIES[action] if route.endpoint == "admin" else route.summary,
        }
        if route.versioned:
            op["parameters"] = [version_param]
        if route.handler == "_status":
            op["parameters"] = [
                {
                    "name": "since",
                    "in": "query",
                    "required": False,
                    "description": "Unix time: only the samples and events newer than it (default: all).",
                    "schema": {"type": "number"},
                }
            ]
        if route.request is not None:
            content = {"application/json": {"schema": _ref(route.request)}}
            op["requestBody"] = {"required": True, "content": content}
        op["responses"] = responses
        if route.auth and auth:  # with a token configured the operation needs it, and says so
            op["security"] = [{"bearer": []}]
            responses["401"] = {
                **_json(_ref("Error"), "Missing or wrong bearer token."),
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            }
        path = concrete(route, s.model_name, action)
        paths.setdefault(path, {})[route.method.lower()] = op
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

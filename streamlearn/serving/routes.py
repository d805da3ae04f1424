"""The prediction server's routes, declared once: the server dispatches by them, the OpenAPI document
describes them.

A path is an OpenAPI template. ``{model_name}`` is the server's one model name (literal in both the
dispatch pattern and the document: the server answers no other name); ``{model_version}`` is any
path segment, accepted for KServe clients and ignored; ``{admin}`` is the server's one
state-changing action (``checkpoint`` on the learner's server, ``reload`` on a replica).

>>> [r.path for r in ROUTES if r.endpoint == "infer"]
['/v2/models/{model_name}/infer', '/v2/models/{model_name}/versions/{model_version}/infer']
>>> pattern(ROUTES[0], "m", "reload").pattern
'/v2/health/live'
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    """One operation of the server."""

    method: str
    #: OpenAPI path template (see the module docstring for its three parameters)
    path: str
    #: the ``endpoint`` label of the request metrics
    endpoint: str
    #: the name of the :class:`~streamlearn.serving.app.App` method that answers it
    handler: str
    #: the OpenAPI ``operationId`` (unique; the versioned twin of an operation adds ``Version``)
    operation_id: str
    summary: str
    #: guarded by the bearer token when ``serve.auth_token`` is set
    auth: bool = False
    #: the request body's schema in the document's components (None: no body)
    request: str | None = None

    @property
    def versioned(self) -> bool:
        return "{model_version}" in self.path


def _versions(*routes: Route) -> tuple[Route, ...]:
    """Each model route, then its ``/versions/{model_version}`` twin (same handler)."""
    out: list[Route] = []
    for r in routes:
        path = r.path.replace("{model_name}", "{model_name}/versions/{model_version}", 1)
        out += [r, dataclasses.replace(r, path=path, operation_id=r.operation_id + "Version")]
    return tuple(out)


MODEL = "/v2/models/{model_name}"
ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2/health/live", "health", "_live", "live", "Liveness."),
    Route("GET", "/v2/health/ready", "health", "_ready", "ready", "Readiness."),
    Route(
        "GET",
        "/metrics",
        "metrics",
        "_metrics",
        "metrics",
        "Prometheus metrics (the learner's appended on the daemon's server).",
    ),
    Route("GET", "/v2", "metadata", "_server_meta", "serverMetadata", "Server metadata."),
    *_versions(
        Route("GET", MODEL, "metadata", "_model_meta", "modelMetadata", "Model metadata."),
        Route("GET", MODEL + "/ready", "health", "_model_ready", "modelReady", "Model readiness."),
        Route(
            "POST",
            MODEL + "/infer",
            "infer",
            "_infer",
            "infer",
            "Open Inference Protocol (KServe v2) inference.",
            auth=True,
            request="InferRequest",
        ),
    ),
    Route(
        "POST",
        "/predict",
        "predict",
        "_predict",
        "predict",
        "Predict one row or a batch.",
        auth=True,
        request="PredictRequest",
    ),
    Route("GET", "/openapi.json", "openapi", "_openapi_json", "openapi", "This document."),
    # the live page (HTML) and the JSON it polls; public like /metrics
    Route(
        "GET", "/", "page", "_page", "livePage", "The live page: charts of learning and a prediction form."
    ),
    Route(
        "GET",
        "/v2/status",
        "status",
        "_status",
        "status",
        "What the live page draws: newest values, samples and events newer than `since`.",
    ),
    Route("POST", "/v2/admin/{admin}", "admin", "_admin", "{admin}", "The state-changing action.", auth=True),
    # the operator's controls (streamlearn.guard.operator): the learner's server only
    Route("POST", "/v2/admin/pause", "operator", "_pause", "pause", "Pause learning.", auth=True),
    Route("POST", "/v2/admin/resume", "operator", "_resume", "resume", "Resume learning.", auth=True),
    Route(
        "POST",
        "/v2/admin/promote",
        "operator",
        "_promote",
        "promote",
        "Promote the learning model to serving now, past the gate.",
        auth=True,
    ),
    Route(
        "POST",
        "/v2/admin/rollback",
        "operator",
        "_rollback",
        "rollback",
        "Reset the learner to the served champion (quarantining what it learned since), or with "
        '{"checkpoint": "ckpt-....slc"} to that checkpoint.',
        auth=True,
    ),
)

#: what the admin action does, by action (its summary in the document)
ADMIN_SUMMARIES = {
    "checkpoint": "Write a checkpoint now and commit its offsets (e.g. before maintenance); "
    "answers once the learner has written it, between two updates.",
    "reload": "Load the newest good checkpoint now instead of at the next poll.",
}


def concrete(route: Route, model_name: str, admin: str) -> str:
    """The route's path with the model name and admin action filled in (``{model_version}`` kept)."""
    return route.path.replace("{model_name}", model_name).replace("{admin}", admin)


def pattern(route: Route, model_name: str, admin: str) -> re.Pattern[str]:
    """The regular expression a request path must match in full to reach ``route``."""
    literal = re.escape(concrete(route, model_name, admin))
    return re.compile(literal.replace(re.escape("{model_version}"), "[^/]+"))

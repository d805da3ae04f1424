"""What the prediction server answers, without the transport: routing, handlers, auth, metrics.

:class:`App` reads the model through a :class:`ModelSource` (the learner's shared-memory snapshot
or a replica's checkpoint loader), so the same app runs inside the daemon's server process and in
``streamlearn serve``; ``http.py`` carries its requests and answers over sockets.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry

from streamlearn import __version__
from streamlearn.metrics import ConnectionMetrics, ServingMetrics, render
from streamlearn.serving import api, binary_tensors, openapi, page
from streamlearn.serving.predictor import ModelView
from streamlearn.serving.routes import ROUTES, pattern
from streamlearn.serving.settings import ServerSettings
from streamlearn.serving.status import LiveStatus

log = logging.getLogger(__name__)

JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
BINARY = "application/octet-stream"  # a JSON header, then binary tensor data
NOT_FINITE = (
    "the served model has non-finite weights and cannot answer (the learner's fault, not the request's)"
)


class ModelSource(Protocol):
    """Where a server gets its model; called from many request threads at once.

    Implementations: ``server_process.SharedMemorySource`` (the learner's live snapshot) and
    ``replica.CheckpointSource`` (the newest good checkpoint). None of the methods may block on
    the learner beyond ``admin``'s own wait, and none may raise for a missing model.
    """

    def current(self) -> ModelView | None:
        """The newest model view, refreshed first if the source has a newer one; None until the
        first model exists. A view is immutable: a request keeps predicting with the one it got."""

    def ready(self) -> bool:
        """Whether predictions should be sent here (readiness probe); the app also requires
        :meth:`current` to have a model."""

    def extra_metrics(self) -> bytes:
        """Exposition text appended to this server's own /metrics (the learner's metrics; b"")."""

    def admin(self, action: str) -> tuple[int, dict[str, Any]]:
        """Carry out a state-changing action (``checkpoint`` on the learner, ``reload`` on a
        replica) and return (HTTP status, JSON body); the app has already checked the token."""


@dataclass(frozen=True)
class Request:
    """What a handler gets: the body, and the request's headers by name (case-insensitive)."""

    body: bytes
    header: Callable[[str], str | None] = lambda _name: None
    #: the request target as sent (path and query)
    path: str = ""


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


class App:
    """The prediction API of one server over one :class:`ModelSource`; thread-safe.

    :meth:`route` maps (method, path) to an endpoint label and a handler by the one route table
    (``routes.ROUTES``); a handler takes a :class:`Request` and returns a :class:`Response` or
    raises ``api.ApiError`` (a 4xx with its message). The app never touches the learner: the
    source hands it immutable model views. It owns the server's registry: request, connection
    and model-version metrics, served on ``/metrics`` ahead of ``source.extra_metrics()``.
    ``role`` is ``learner`` (the daemon's server: admin action ``checkpoint``) or ``replica``
    (``reload``).
    """

    def __init__(self, source: ModelSource, settings: ServerSettings, *, role: str) -> None:
        self.source = source
        self.settings = settings
        #: what /v2/health/ready says this process is: the learner is a fleet's active (of a fleet
        #: of one without ``fleet.enabled``), a standby waits to take over, a replica only serves
        self.role = {"learner": "active"}.get(role, role)
        self.registry = CollectorRegistry()
        self.metrics = ServingMetrics(
            self.registry, role=role, learner=settings.learner, model=settings.model_name
        )
        self._last_version: int | None = None
        self._openapi: tuple[tuple[str, ...], bytes] | None = None  # (labels, document)
        #: the one state-changing action of this server, POST /v2/admin/<action> (bearer token only)
        self.admin_action = "checkpoint" if role == "learner" else "reload"
        self.connections = ConnectionMetrics(self.registry)
        admin = self.admin_action
        self._routes = [
            (r.method, pattern(r, settings.model_name, admin), r.endpoint, getattr(self, r.handler))
            for r in ROUTES
            if r.endpoint != "operator" or role == "learner"
        ]
        self._guarded = {r.endpoint for r in ROUTES if r.auth}
        #: the live page's data (``GET /v2/status``); the server's main starts its sampler
        self.live = LiveStatus(source.extra_metrics, getattr(source, "live_meta", dict), self._live_facts)

    # -- dispatch -----------------------------------------------------------------------------
    def route(self, method: str, path: str) -> tuple[str, Callable[[Request], Response] | None, list[str]]:
        """(endpoint label, handler or None, the methods the path has: empty if none, i.e. 404)."""
        path = path.split("?", 1)[0]
        allowed: list[str] = []
        for m, regex, endpoint, handler in self._routes:
            if regex.fullmatch(path):
                if m == method:
                    return endpoint, handler, [m]
                allowed.append(m)
        return ("other", None, allowed)

    def needs_auth(self, endpoint: str) -> bool:
        return self.settings.auth_token is not None and endpoint in self._guarded

    def authorized(self, header: str | None) -> bool:
        expected = f"Bearer {self.settings.auth_token}"
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    def current(self) -> ModelView | None:
        view = self.source.current()
        if view is not None and view.version != self._last_version:
            self._last_version = view.version  # a race here only miscounts a reload, never a prediction
            self.metrics.reloads.inc()
            self.metrics.serving_version.set(view.version)
        return view

    # -- handlers -----------------------------------------------------------------------------
    def _live(self, _request: Request) -> Response:
        return Response(200, b'{"live":true}')

    def _ready(self, _request: Request) -> Response:
        view = self.current()
        ok = self.source.ready() and view is not None and view.finite
        self.metrics.ready.set(int(ok))
        body: dict[str, Any] = {"ready": ok, "role": self.role}
        if view is not None and not view.finite:
            body["reason"] = NOT_FINITE
        return Response(200 if ok else 503, orjson.dumps(body))

    def _model_ready(self, _request: Request) -> Response:
        view = self.current()
        ok = view is not None and view.finite
        return Response(200 if ok else 503, orjson.dumps({"name": self.settings.model_name, "ready": ok}))

    def _metrics(self, _request: Request) -> Response:
        view = self.current()
        self.metrics.ready.set(int(self.source.ready() and view is not None and view.finite))
        self.metrics.serving_version.set(-1 if view is None else view.version)
        return Response(200, render(self.registry) + self.source.extra_metrics(), PROMETHEUS)

    def _server_meta(self, _request: Request) -> Response:
        return Response(
            200,
            orjson.dumps(
                {"name": "streamlearn", "version": __version__, "extensions": ["binary_tensor_data"]}
            ),
        )

    def _model_meta(self, _request: Request) -> Response:
        view = self.current()
        labels = view.labels if view is not None else ()
        version = view.version if view is not None else -1
        s = self.settings
        body = api.model_metadata(s.model_name, version, s.learner, s.n_inputs, s.n_classes, labels)
        status = getattr(self.source, "guard_status", None)  # the learner's server only
        guard = status() if status is not None else None
        if guard:  # the promotion gate's state: held (and why), champion and challenger versions
            doc = orjson.loads(body)
            doc["parameters"]["guard"] = guard
            body = orjson.dumps(doc)
        return Response(200, body)

    def _openapi_json(self, _request: Request) -> Response:
        view = self.current()
        labels = view.labels if view is not None else ()
        cached = self._openapi
        if cached is None or cached[0] != labels:  # labels are examples in it; they grow as names appear
            doc = openapi.document(self.settings, labels, admin=self.admin_action)
            cached = self._openapi = (labels, orjson.dumps(doc))
        return Response(200, cached[1])

    def _page(self, _request: Request) -> Response:
        body, headers = page.page()
        return Response(200, body, page.HTML, headers)

    def _status(self, request: Request) -> Response:
        return Response(200, self.live.document(request.path), headers=(("Cache-Control", "no-store"),))

    def _live_facts(self) -> dict[str, Any]:
        """This server's own facts for the live page (the learner's come from its metrics)."""
        s = self.settings
        return {
            "role": self.role,
            "ready": self.source.ready(),
            "served_version": self._last_version,
            "model": s.model_name,
            "learner": s.learner,
            "n_inputs": s.n_inputs,
            "n_classes": s.n_classes,
            "auth": s.auth_token is not None,
        }

    def _admin(self, _request: Request) -> Response:
        if self.settings.auth_token is None:  # state changes need a token: none configured, none allowed
            raise api.ApiError(403, f"POST /v2/admin/{self.admin_action} needs serve.auth_token to be set")
        status, payload = self.source.admin(self.admin_action)
        return Response(status, orjson.dumps(payload))

    # -- the operator's controls (learner's server only; streamlearn.guard.operator) -----------
    def _operate(self, action: str) -> Response:
        if self.settings.auth_token is None:
            raise api.ApiError(403, f"POST /v2/admin/{action.split()[0]} needs serve.auth_token to be set")
        status, payload = self.source.admin(action)
        return Response(status, orjson.dumps(payload))

    def _pause(self, _request: Request) -> Response:
        return self._operate("pause")

    def _resume(self, _request: Request) -> Response:
        return self._operate("resume")

    def _promote(self, _request: Request) -> Response:
        return self._operate("promote")

    def _rollback(self, request: Request) -> Response:
        name = ""
        if request.body.strip():
            try:
                body = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                raise api.ApiError(
                    400, 'the body must be JSON: {} or {"checkpoint": "ckpt-....slc"}'
                ) from None
            name = body.get("checkpoint", "") if isinstance(body, dict) else ""
            if not isinstance(name, str):
                raise api.ApiError(400, "checkpoint must be a checkpoint file name")
        return self._operate(f"rollback {name}".strip())

    def _view(self) -> ModelView:
        view = self.current()
        if view is None:
            raise api.ApiError(503, "no model yet: the learner has not published one (see /v2/health/ready)")
        if not view.finite:
            raise api.ApiError(503, NOT_FINITE)
        return view

    def _predict(self, request: Request) -> Response:
        rows = api.parse_predict(
            request.body, n_inputs=self.settings.n_inputs, max_rows=self.settings.max_rows
        )
        view = self._view()
        out = api.predict_response(view.predict_proba(rows.rows), rows, view.labels, view.version)
        self.metrics.rows.inc(rows.rows.shape[0])
        return Response(200, out)

    def _infer(self, request: Request) -> Response:
        s = self.settings
        length = request.header(binary_tensors.HEADER)
        rows = api.parse_infer(request.body, n_inputs=s.n_inputs, max_rows=s.max_rows, header_length=length)
        view = self._view()
        probs = view.predict_proba(rows.rows)
        out, json_length = api.infer_response(probs, rows, view.labels, view.version, s.model_name)
        self.metrics.rows.inc(rows.rows.shape[0])
        if json_length is None:
            return Response(200, out)
        return Response(200, out, BINARY, ((binary_tensors.HEADER, str(json_length)),))

"""The prediction server: Open Inference Protocol + ``/predict`` + ``/metrics`` on one port.

Standard-library ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive, chosen by measurement
(``benchmarks/serving_load.py``): a request costs a few hundred microseconds of Python, far below
the 10 ms p99 target, and it adds no dependency. ``disable_nagle_algorithm`` matters: without it
every keep-alive response waited for the peer's delayed ACK (44 ms here).

:class:`App` does the routing and the bookkeeping; it reads the model through a ``ModelSource``
(the learner's shared-memory snapshot or a replica's checkpoint loader), so the same server runs
inside the daemon's server process and in ``streamlearn serve``.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry

from streamlearn import __version__
from streamlearn.metrics import ServingMetrics, render
from streamlearn.serving import api, openapi
from streamlearn.serving.predictor import ModelView

log = logging.getLogger(__name__)

JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


class ModelSource(Protocol):
    def current(self) -> ModelView | None:
        """The newest model view (refreshing it if the source has a newer one)."""

    def ready(self) -> bool: ...

    def extra_metrics(self) -> bytes:
        """Exposition text appended to this server's own /metrics (the learner's metrics)."""

    def admin(self, action: str) -> tuple[int, dict[str, Any]]:
        """Carry out a state-changing action (``checkpoint`` on the learner, ``reload`` on a
        replica); (HTTP status, JSON body)."""


@dataclass
class ServerSettings:
    model_name: str
    learner: str
    n_inputs: int
    n_classes: int
    max_request_bytes: int
    max_rows: int
    auth_token: str | None = None


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


class App:
    def __init__(self, source: ModelSource, settings: ServerSettings, *, role: str) -> None:
        self.source = source
        self.s = settings
        self.registry = CollectorRegistry()
        self.metrics = ServingMetrics(
            self.registry, role=role, learner=settings.learner, model=settings.model_name
        )
        self._last_version: int | None = None
        self._openapi: tuple[tuple[str, ...], bytes] | None = None  # (labels, document)
        #: the one state-changing action of this server, POST /v2/admin/<action> (bearer token only)
        self.admin_action = "checkpoint" if role == "learner" else "reload"
        name = re.escape(settings.model_name)
        self._routes: list[tuple[str, re.Pattern[str], str, Callable[[bytes], Response]]] = [
            ("GET", re.compile(r"/v2/health/live"), "health", self._live),
            ("GET", re.compile(r"/v2/health/ready"), "health", self._ready),
            ("GET", re.compile(r"/metrics"), "metrics", self._metrics),
            ("GET", re.compile(r"/v2"), "metadata", self._server_meta),
            ("GET", re.compile(rf"/v2/models/{name}(?:/versions/[^/]+)?"), "metadata", self._model_meta),
            ("GET", re.compile(rf"/v2/models/{name}(?:/versions/[^/]+)?/ready"), "health", self._model_ready),
            ("POST", re.compile(rf"/v2/models/{name}(?:/versions/[^/]+)?/infer"), "infer", self._infer),
            ("POST", re.compile(r"/predict"), "predict", self._predict),
            ("GET", re.compile(r"/openapi\.json"), "openapi", self._openapi_json),
            ("POST", re.compile(rf"/v2/admin/{self.admin_action}"), "admin", self._admin),
        ]

    # -- dispatch -----------------------------------------------------------------------------
    def route(self, method: str, path: str) -> tuple[str, Callable[[bytes], Response] | None, list[str]]:
        """(endpoint label, handler or None, the methods the path has: empty if none, i.e. 404)."""
        path = path.split("?", 1)[0]
        allowed: list[str] = []
        for m, pattern, endpoint, handler in self._routes:
            if pattern.fullmatch(path):
                if m == method:
                    return endpoint, handler, [m]
                allowed.append(m)
        return ("other", None, allowed)

    def needs_auth(self, endpoint: str) -> bool:
        return self.s.auth_token is not None and endpoint in ("predict", "infer", "admin")

    def authorized(self, header: str | None) -> bool:
        expected = f"Bearer {self.s.auth_token}"
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    def current(self) -> ModelView | None:
        view = self.source.current()
        if view is not None and view.version != self._last_version:
            self._last_version = view.version  # a race here only miscounts a reload, never a prediction
            self.metrics.reloads.inc()
            self.metrics.serving_version.set(view.version)
        return view

    # -- handlers -----------------------------------------------------------------------------
    def _live(self, _body: bytes) -> Response:
        return Response(200, b'{"live":true}')

    def _ready(self, _body: bytes) -> Response:
        ok = self.source.ready() and self.current() is not None
        self.metrics.ready.set(int(ok))
        return Response(200 if ok else 503, orjson.dumps({"ready": ok}))

    def _model_ready(self, body: bytes) -> Response:
        ok = self.current() is not None
        return Response(200 if ok else 503, orjson.dumps({"name": self.s.model_name, "ready": ok}))

    def _metrics(self, _body: bytes) -> Response:
        view = self.current()
        self.metrics.ready.set(int(self.source.ready() and view is not None))
        self.metrics.serving_version.set(-1 if view is None else view.version)
        return Response(200, render(self.registry) + self.source.extra_metrics(), PROMETHEUS)

    def _server_meta(self, _body: bytes) -> Response:
        return Response(200, orjson.dumps({"name": "streamlearn", "version": __version__, "extensions": []}))

    def _model_meta(self, _body: bytes) -> Response:
        view = self.current()
        labels = view.labels if view is not None else ()
        version = view.version if view is not None else -1
        s = self.s
        return Response(
            200, api.model_metadata(s.model_name, version, s.learner, s.n_inputs, s.n_classes, labels)
        )

    def _openapi_json(self, _body: bytes) -> Response:
        view = self.current()
        labels = view.labels if view is not None else ()
        cached = self._openapi
        if cached is None or cached[0] != labels:  # labels are examples in it; they grow as names appear
            doc = openapi.document(self.s, labels, admin=self.admin_action)
            cached = self._openapi = (labels, orjson.dumps(doc))
        return Response(200, cached[1])

    def _admin(self, _body: bytes) -> Response:
        if self.s.auth_token is None:  # state changes need a token: none configured, none allowed
            raise api.ApiError(403, f"POST /v2/admin/{self.admin_action} needs serve.auth_token to be set")
        status, payload = self.source.admin(self.admin_action)
        return Response(status, orjson.dumps(payload))

    def _view(self) -> ModelView:
        view = self.current()
        if view is None:
            raise api.ApiError(503, "no model yet: the learner has not published one (see /v2/health/ready)")
        return view

    def _predict(self, body: bytes) -> Response:
        rows = api.parse_predict(body, n_inputs=self.s.n_inputs, max_rows=self.s.max_rows)
        view = self._view()
        out = api.predict_response(view.predict_proba(rows.rows), rows, view.labels, view.version)
        self.metrics.rows.inc(rows.rows.shape[0])
        return Response(200, out)

    def _infer(self, body: bytes) -> Response:
        rows = api.parse_infer(body, n_inputs=self.s.n_inputs, max_rows=self.s.max_rows)
        view = self._view()
        probs = view.predict_proba(rows.rows)
        out = api.infer_response(probs, rows, view.labels, view.version, self.s.model_name)
        self.metrics.rows.inc(rows.rows.shape[0])
        return Response(200, out)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Without this each keep-alive response waited ~44 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    # A client that stops sending mid-request (or idles on keep-alive) frees its thread after this.
    timeout = 60.0
    # The standard library answers a request line it cannot parse "as HTTP/0.9": a body with no
    # status line, which no HTTP/1.x client can read. Assume 1.0 until the line says otherwise.
    default_request_version = "HTTP/1.0"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (garbled request line, oversized or too many
        headers, bad HTTP version): JSON like every other error, and the connection closed."""
        text = f"{code} {message or HTTPStatus(code).phrase}" + (f": {explain}" if explain else "")
        self._error("other", time.perf_counter(), code, text, close=True)

    def _send(self, endpoint: str, t0: float, resp: Response, *, close: bool = False) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":  # HEAD: GET's headers, no body (the client reads none)
            self.wfile.write(resp.body)
        app = self.server.app
        app.metrics.requests.labels(endpoint=endpoint, code=str(resp.status)).inc()
        app.metrics.seconds.labels(endpoint=endpoint).observe(time.perf_counter() - t0)

    def _error(
        self,
        endpoint: str,
        t0: float,
        status: int,
        message: str,
        *,
        close: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._send(endpoint, t0, Response(status, api.error_body(message), headers=headers), close=close)

    def _dispatch(self, method: str) -> None:
        t0 = time.perf_counter()
        app = self.server.app
        endpoint, handler, allowed = app.route("GET" if method == "HEAD" else method, self.path)
        body = b""
        if method == "POST":
            length = self.headers.get("Content-Length")
            if length is None or "Transfer-Encoding" in self.headers:
                # no chunked bodies: a size limit needs the size up front (and both headers at once
                # would let a proxy and this server disagree on where the request ends)
                return self._error(
                    endpoint, t0, 411, "Content-Length required (no chunked bodies)", close=True
                )
            # digits only, once: int() also takes "+5", "1_0" and " 7", which a proxy may read otherwise
            text = length.strip()
            if not (text.isascii() and text.isdigit()) or len(self.headers.get_all("Content-Length", [])) > 1:
                return self._error(endpoint, t0, 400, "bad Content-Length", close=True)
            n = int(text)
            if n > app.s.max_request_bytes:
                # refuse without reading it; the connection is closed so the unread body is dropped
                limit = app.s.max_request_bytes
                msg = f"body of {n} bytes exceeds the limit of {limit} (serve.max_request_bytes)"
                return self._error(endpoint, t0, 413, msg, close=True)
            body = self.rfile.read(n)
        elif self.headers.get("Content-Length", "0").strip() != "0" or "Transfer-Encoding" in self.headers:
            # a body nobody reads would be parsed as the next request: answer, then drop the connection
            self.close_connection = True
        if handler is None:
            what = "method not allowed" if allowed else "not found"
            return self._error(
                endpoint,
                t0,
                405 if allowed else 404,
                f"{method} {self.path}: {what}",
                headers=(("Allow", ", ".join(allowed)),) if allowed else (),
            )
        if app.needs_auth(endpoint) and not app.authorized(self.headers.get("Authorization")):
            msg = "missing or wrong bearer token (serve.auth_token)"
            return self._error(endpoint, t0, 401, msg, headers=(("WWW-Authenticate", "Bearer"),))
        try:
            resp = handler(body)
        except api.ApiError as exc:
            return self._error(endpoint, t0, exc.status, exc.message)
        except Exception:  # a bug must not kill the server; the learner is unaffected either way
            log.exception("internal error on %s %s", method, self.path)
            return self._error(endpoint, t0, 500, "internal error (logged)")
        self._send(endpoint, t0, resp)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def __getattr__(self, name: str) -> Callable[[], None]:
        # Any other method (PUT, DELETE, PATCH, OPTIONS, BREW...): a JSON 405 or 404 like the rest,
        # not the standard library's HTML "501 Unsupported method".
        if name.startswith("do_"):
            return lambda: self._dispatch(name[3:])
        raise AttributeError(name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(addr, _Handler)


def make_server(app: App, host: str, port: int) -> _Server:
    return _Server((host, port), app)


def serve_in_thread(app: App, host: str, port: int) -> tuple[_Server, threading.Thread]:
    """Start serving on a background thread; returns ``(server, thread)`` (``server.server_port`` = port)."""
    server = make_server(app, host, port)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True)
    t.start()
    return server, t

"""The prediction server's transport: :class:`~streamlearn.serving.app.App` over HTTP/1.1 sockets.

Standard-library ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive, chosen by measurement
(``benchmarks/serving_load.py``): a request costs a few hundred microseconds of Python, far below
the 10 ms p99 target, and it adds no dependency. ``disable_nagle_algorithm`` matters: without it
every keep-alive response waited for the peer's delayed ACK (44 ms here).

A thread per connection, so connections are bounded (``connections.py``: ``serve.max_connections``,
``serve.request_timeout_seconds``). A client that hangs up before its answer is normal: it is
counted (``streamlearn_http_client_disconnects_total``) and logged at debug level, never as a
traceback.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streamlearn.serving import api
from streamlearn.serving.app import App, Response
from streamlearn.serving.connections import ConnectionSlots, DeadlineReader

log = logging.getLogger(__name__)

#: what a connection beyond the cap gets, written without a thread (every connection is busy)
_REFUSED = api.error_body("too many connections: every one is being answered (serve.max_connections)")
REFUSED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_REFUSED)).encode() + b"\r\n\r\n" + _REFUSED
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Without this each keep-alive response waited ~44 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    # Reads are bounded per request by serve.request_timeout_seconds (DeadlineReader); this bounds
    # the rest (writing an answer to a client that does not read it) until a request sets its own.
    timeout = 60.0
    # The standard library answers a request line it cannot parse "as HTTP/0.9": a body with no
    # status line, which no HTTP/1.x client can read. Assume 1.0 until the line says otherwise.
    default_request_version = "HTTP/1.0"
    server: _Server
    reader: DeadlineReader

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain socket file: reads go through the request deadline instead
        self.reader = DeadlineReader(self.connection, self._timed_out)
        self.rfile = io.BufferedReader(self.reader)

    def handle(self) -> None:
        """Requests until the connection closes; a client hanging up is normal, not an error."""
        slots, settings = self.server.slots, self.server.app.settings
        self.close_connection = True
        try:
            while slots.waiting(self.connection):
                self.reader.arm(settings.request_timeout_seconds)
                self.handle_one_request()
                if self.close_connection:
                    break
        except ConnectionError as exc:  # reset, broken pipe: the client left before its answer
            self.server.app.connections.client_disconnects.inc()
            log.debug("%s hung up: %s", self.address_string(), exc)

    def _timed_out(self, started: bool) -> None:
        reason = "request_timeout" if started else "idle_timeout"
        self.server.app.connections.closed.labels(reason=reason).inc()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (garbled request line, oversized or too many
        headers, bad HTTP version): JSON like every other error, and the connection closed."""
        text = f"{code} {message or HTTPStatus(code).phrase}" + (f": {explain}" if explain else "")
        self._error("other", time.perf_counter(), code, text, close=True)

    def _send(self, endpoint: str, t0: float, resp: Response, *, close: bool = False) -> None:
        if not self.server.slots.busy(self.connection):  # evicted while its request arrived
            self.close_connection = True
            return
        self.connection.settimeout(self.server.app.settings.request_timeout_seconds)
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
            if n > app.settings.max_request_bytes:
                # refuse without reading it; the connection is closed so the unread body is dropped
                limit = app.settings.max_request_bytes
                msg = f"body of {n} bytes exceeds the limit of {limit} (serve.max_request_bytes)"
                return self._error(endpoint, t0, 413, msg, close=True)
            try:
                body = self.rfile.read(n)
            except TimeoutError:
                msg = f"the body did not arrive within {app.settings.request_timeout_seconds} s"
                return self._error(endpoint, t0, 408, msg + " (serve.request_timeout_seconds)", close=True)
            if len(body) < n:  # the client closed mid-body (or the connection was evicted)
                self.close_connection = True
                return None
        elif self.headers.get("Content-Length", "0").strip() != "0" or "Transfer-Encoding" in self.headers:
            # a body nobody reads would be parsed as the next request: answer, then drop the connection
            self.close_connection = True
        if not self.server.slots.busy(self.connection):  # the request is in: answer it, not evictable
            self.close_connection = True
            return None
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
    # The listen backlog: a burst of connects (most of them evicted at once) must not overflow it,
    # or a client's SYN is dropped and its connect waits a second for the retransmit.
    request_queue_size = 1024

    def __init__(self, addr: tuple[str, int], app: App) -> None:
        self.app = app
        self.slots = ConnectionSlots(app.settings.max_connections, app.connections)
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """On the accepting thread: a thread for the connection if there is a slot, else 503."""
        if self.slots.admit(request):
            super().process_request(request, client_address)
            return
        try:
            request.setblocking(False)  # never wait on this client: it gets what fits, then closed
            request.send(REFUSED_RESPONSE)
        except OSError:
            pass
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An exception out of a connection's thread: a client hanging up is counted; a bug logged."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            if isinstance(exc, ConnectionError):
                self.app.connections.client_disconnects.inc()
            log.debug("%s: %s", client_address, exc)
            return
        log.exception("error on the connection from %s", client_address)


def make_server(app: App, host: str, port: int) -> _Server:
    return _Server((host, port), app)


def serve_in_thread(app: App, host: str, port: int) -> tuple[_Server, threading.Thread]:
    """Start serving on a background thread; returns ``(server, thread)`` (``server.server_port`` = port)."""
    server = make_server(app, host, port)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True)
    t.start()
    return server, t

"""The prediction server's transport: :class:`~streamlearn.serving.app.App` over HTTP/1.1 sockets.

The standard library's HTTP parsing (``BaseHTTPRequestHandler``) with HTTP/1.1 keep-alive, chosen
by measurement (``benchmarks/serving_load.py``): a request costs a few hundred microseconds of
Python, far below the 10 ms p99 target, and it adds no dependency. ``disable_nagle_algorithm``
matters: without it every keep-alive response waited for the peer's delayed ACK (44 ms here).

Connections wait for their requests in ``connections.WaitingRoom`` (one thread for all of them,
bounded by ``serve.max_connections`` and ``serve.request_timeout_seconds``); a worker thread
answers a request once it is in, and gives a keep-alive connection back to the room. A client
that hangs up before its answer is normal: it is counted
(``streamlearn_http_client_disconnects_total``) and logged at debug level, never as a traceback.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from io import BufferedIOBase
from typing import Any

from streamlearn.serving import api
from streamlearn.serving.app import App, Request, Response
from streamlearn.serving.connections import Conn, RequestReader, WaitingRoom, Workers

log = logging.getLogger(__name__)


class _Writer(BufferedIOBase):
    """``wfile``: straight to the socket, nothing buffered (so nothing to flush or lose)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sock.sendall(data)
        return len(data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Without this each keep-alive response waited ~44 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    # The standard library answers a request line it cannot parse "as HTTP/0.9": a body with no
    # status line, which no HTTP/1.x client can read. Assume 1.0 until the line says otherwise.
    default_request_version = "HTTP/1.0"
    server: _Server
    request: Conn
    rfile: RequestReader  # type: ignore[assignment]

    def setup(self) -> None:
        """One request of a connection whose request the waiting room has read (mostly) already."""
        conn = self.request
        self.connection = conn.sock
        conn.sock.setblocking(True)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        deadline = conn.since + self.server.app.settings.request_timeout_seconds
        self.rfile = RequestReader(conn, deadline, self._timed_out)
        self.wfile = _Writer(conn.sock)
        self.keep_alive = False

    def handle(self) -> None:
        """One request; the connection then goes back to the waiting room unless it must close."""
        self.close_connection = True
        try:
            self.handle_one_request()
        except ConnectionError as exc:  # reset, broken pipe: the client left before its answer
            self.server.app.connections.client_disconnects.inc()
            log.debug("%s hung up: %s", self.address_string(), exc)
            self.close_connection = True
        self.keep_alive = not self.close_connection

    def _timed_out(self) -> None:
        self.server.app.connections.closed.labels(reason="request_timeout").inc()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (garbled request line, oversized or too many
        headers, bad HTTP version): JSON like every other error, and the connection closed."""
        text = f"{code} {message or HTTPStatus(code).phrase}" + (f": {explain}" if explain else "")
        self._error("other", time.perf_counter(), code, text, close=True)

    def _send(self, endpoint: str, t0: float, resp: Response, *, close: bool = False) -> None:
        # the client must take its answer as promptly as it had to send its request
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
            if len(body) < n:  # the client closed mid-body
                self.server.app.connections.client_disconnects.inc()
                self.close_connection = True
                return None
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
            resp = handler(Request(body, self.headers.get, self.path))
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


class _Server(HTTPServer):
    """Accepts on ``serve_forever``'s thread, hands every connection to the waiting room."""

    allow_reuse_address = True
    # The listen backlog: a burst of connects (most of them evicted at once) must not overflow it,
    # or a client's SYN is dropped and its connect waits a second for the retransmit.
    request_queue_size = 1024

    def __init__(self, addr: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(addr, _Handler)
        s = app.settings
        self.workers = Workers(s.max_connections)
        self.room = WaitingRoom(
            s.max_connections, s.request_timeout_seconds, s.max_request_bytes, app.connections, self._hand_off
        )

    def process_request(self, request: Any, client_address: Any) -> None:
        self.room.add(request, client_address)

    def _hand_off(self, conn: Conn) -> None:
        self.workers.submit(lambda: self._answer(conn))

    def _answer(self, conn: Conn) -> None:
        """On a worker: one request, then the connection back to the room or closed."""
        try:
            keep = _Handler(conn, conn.address, self).keep_alive  # type: ignore[arg-type]  # a Conn, see setup
        except Exception:
            self.handle_error(conn.sock, conn.address)
            keep = False
        if keep:
            self.room.put_back(conn)
            return
        self.shutdown_request(conn.sock)
        self.room.closed(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An exception out of a handler: a client hanging up is counted; a bug logged."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            if isinstance(exc, ConnectionError):
                self.app.connections.client_disconnects.inc()
            log.debug("%s: %s", client_address, exc)
            return
        log.exception("error on the connection from %s", client_address)

    def server_close(self) -> None:
        super().server_close()
        room = getattr(self, "room", None)  # None: the bind failed, nothing was started
        if room is not None:
            room.stop()


def make_server(app: App, host: str, port: int) -> _Server:
    return _Server((host, port), app)


def serve_in_thread(app: App, host: str, port: int) -> tuple[_Server, threading.Thread]:
    """Start serving on a background thread; returns ``(server, thread)`` (``server.server_port`` = port)."""
    server = make_server(app, host, port)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True)
    t.start()
    return server, t

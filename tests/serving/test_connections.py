"""Connections over real sockets: hang-ups are quiet and counted, connections and request times bounded."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.config import Config, ModelConfig, ServeConfig
from streamlearn.learners import build_model
from streamlearn.serving.app import App
from streamlearn.serving.http import serve_in_thread
from streamlearn.serving.predictor import ModelView
from streamlearn.serving.publisher import Publisher
from streamlearn.serving.settings import ServerSettings
from tests.serving.test_http import N_CLS, N_IN, StaticSource, _view

ROW = json.dumps({"x": [0.5] * N_IN}).encode()
PREDICT = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(ROW), ROW)


def metric(port: int, name: str, **labels: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise AssertionError(f"{name}{labels} not in /metrics")


def predict(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/predict", body=ROW)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@contextmanager
def stderr_into(path: Path) -> Iterator[None]:
    """fd 2 into ``path`` meanwhile: a process started now writes its stderr there for good."""
    saved, fd = os.dup(2), os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The daemon's real prediction-server process: its port and the file its stderr goes to."""
    cfg = Config(model=ModelConfig(n_inputs=N_IN, n_classes=N_CLS, hidden=[5]), serve=ServeConfig(port=0))
    model = build_model("mlp", N_IN, N_CLS, (5,), seed=0)
    pub = Publisher(cfg, model, "mer")
    stderr = tmp_path / "server.stderr"
    try:
        with stderr_into(stderr):
            port = pub.start()
        pub.publish_model(3)
        pub.publish_text({"labels": ["a", "b", "c"]}, b"")
        pub.set_ready(True)
        yield port, stderr
    finally:
        pub.stop()


def test_client_hang_ups_are_counted_not_logged(server_process: tuple[int, Path]) -> None:
    port, stderr = server_process
    assert predict(port) == 200
    n = 1000
    for i in range(2 * n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(PREDICT)
        if i % 2:  # reset: SO_LINGER 0 makes close() send RST instead of FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # before reading the answer
    deadline = time.monotonic() + 30
    while (counted := metric(port, "streamlearn_http_client_disconnects_total")) < n:
        lines = stderr.read_text().splitlines()
        assert time.monotonic() < deadline, f"{counted} hang-ups counted; stderr: {len(lines)} lines"
        time.sleep(0.2)
    assert predict(port) == 200  # and the server answers as before
    lines = stderr.read_text().splitlines()
    assert len(lines) < 100, "\n".join(lines[:40])
    # every reset is seen (its read or write fails); a FIN-closed one only when its answer bounced
    assert n <= counted <= 2 * n


def closed(app: App, reason: str) -> float | None:
    return app.registry.get_sample_value("streamlearn_http_connections_closed_total", {"reason": reason})


def settings(**kw: object) -> ServerSettings:
    base = ServerSettings("m", "mer", n_inputs=N_IN, n_classes=N_CLS, max_request_bytes=2000, max_rows=4)
    for k, v in kw.items():
        setattr(base, k, v)
    return base


@contextmanager
def serving(source: StaticSource, **kw: object) -> Iterator[tuple[App, int]]:
    app = App(source, settings(**kw), role="replica")
    server, _thread = serve_in_thread(app, "127.0.0.1", 0)
    try:
        yield app, server.server_port
    finally:
        server.shutdown()
        server.server_close()


def trickle(stop: threading.Event, sockets: list[socket.socket]) -> None:
    """A header byte per connection every 50 ms, never the end of the headers (slowloris)."""
    for s in sockets:
        s.sendall(b"POST /predict HTTP/1.1\r\n")
    while not stop.wait(0.05):
        for s in sockets:
            with contextlib.suppress(OSError):  # closed by the server: what it should do
                s.sendall(b"x")


def test_idle_and_trickling_connections_cannot_starve_a_client() -> None:
    view, _ = _view()
    cap = 8
    base_threads = threading.active_count()
    with serving(StaticSource(view), max_connections=cap, request_timeout_seconds=30.0) as (app, port):
        stop = threading.Event()
        with ExitStack() as stack:
            idle = [stack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(40)]
            slow = [stack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(40)]
            t = threading.Thread(target=trickle, args=(stop, slow), daemon=True)
            t.start()
            statuses, most_threads = [], 0
            for i in range(60):
                if i % 3 == 0:  # more hostile connections keep arriving between the requests
                    idle.append(stack.enter_context(socket.create_connection(("127.0.0.1", port))))
                statuses.append(predict(port))
                most_threads = max(most_threads, threading.active_count() - base_threads)
            stop.set()
            t.join()
            assert len(idle) + len(slow) > 10 * cap
        assert statuses == [200] * 60
        # one thread per admitted connection, plus the accepting thread and the trickler
        assert most_threads <= cap + 2
        assert closed(app, "evicted") >= 80 - cap


def test_a_request_must_arrive_in_full_within_the_timeout() -> None:
    view, _ = _view()
    with serving(StaticSource(view), request_timeout_seconds=1.0) as (app, port):
        s = socket.create_connection(("127.0.0.1", port))
        t0 = time.monotonic()
        s.sendall(b"POST /predict HTTP/1.1\r\n")
        closed_after = None
        while closed_after is None and time.monotonic() - t0 < 5:
            time.sleep(0.1)  # each byte well within any per-recv timeout
            try:
                s.sendall(b"x")
            except OSError:
                closed_after = time.monotonic() - t0
        s.close()
        assert closed_after is not None and 1.0 <= closed_after < 2.5
        assert closed(app, "request_timeout") == 1
        # a body that stops short: 408, not a thread held forever
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        s.settimeout(5)
        answer = s.recv(4096)
        s.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        # a body that stops short and a client that says so (half-close): 400 at once, with why
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        answer = s.recv(4096)
        s.close()
        assert answer.startswith(b"HTTP/1.1 400 ") and b"ended before the whole request" in answer
        assert predict(port) == 200


class BlockingSource(StaticSource):
    """Every model lookup waits until released: requests stay busy as long as the test wants."""

    def __init__(self, view: ModelView) -> None:
        super().__init__(view)
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def current(self) -> ModelView | None:
        self.entered.release()
        self.release.wait(10)
        return self.view


def test_at_the_cap_with_every_connection_busy_a_new_one_waits_then_gets_503() -> None:
    view, _ = _view()
    source = BlockingSource(view)
    with serving(source, max_connections=2, request_timeout_seconds=1.0) as (app, port):
        busy = [threading.Thread(target=predict, args=(port,), daemon=True) for _ in range(2)]
        for t in busy:
            t.start()
        for _ in busy:
            assert source.entered.acquire(timeout=10)
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(5)
        t0 = time.monotonic()
        answer = s.recv(4096)
        waited = time.monotonic() - t0
        s.close()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"serve.max_connections" in answer
        assert 0.9 <= waited < 3  # it waited for a busy connection to finish, then gave up
        assert closed(app, "refused") == 1
        # one that arrives while they are busy is answered once one finishes: waited, not refused
        late = threading.Timer(0.3, source.release.set)
        late.start()
        assert predict(port) == 200
        late.join()
        for t in busy:
            t.join(10)
        assert closed(app, "refused") == 1

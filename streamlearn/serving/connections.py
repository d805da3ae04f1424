"""The prediction server's connection limits: how many connections, and how long a request may take.

A thread per connection is what keeps the server simple and fast (``http.py``), so the number of
connections must be bounded or a client that opens thousands and sends nothing (slowloris) costs
a thread and its stack each, forever. :class:`ConnectionSlots` admits at most
``serve.max_connections``; at the cap it makes room by closing the connection that has waited
longest for its next request (an idle keep-alive or a request still trickling in), never one the
server is answering. So idle or hostile connections cannot starve a client that sends its request
at once: its connection is the newest, and it turns busy as soon as its request is in. When every
connection is busy answering, a new one is refused (503) instead of queued behind them.

:class:`DeadlineReader` bounds the time a request takes to arrive in full (request line, headers
and body), not only each ``recv``: a client sending one header byte every few seconds is cut off
after ``serve.request_timeout_seconds`` like one that sends nothing.
"""

from __future__ import annotations

import contextlib
import io
import math
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from streamlearn.metrics import ConnectionMetrics

#: how long a new connection waits for the evicted one's thread to end before it is refused instead
EVICT_WAIT_S = 1.0
REASONS = ("evicted", "refused", "idle_timeout", "request_timeout")


class DeadlineReader(io.RawIOBase):
    """A socket's reads under one deadline per request (``arm`` it before each request).

    ``on_timeout(started)`` is called once per expiry, ``started`` telling whether any byte of the
    request had arrived (a request timing out vs an idle connection); then ``TimeoutError``.
    """

    def __init__(self, sock: socket.socket, on_timeout: Callable[[bool], None]) -> None:
        super().__init__()
        self.sock = sock
        self.on_timeout = on_timeout
        self.deadline = math.inf
        self.started = False

    def arm(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.started = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError("the request did not arrive in time")
            self.sock.settimeout(left)
            n = self.sock.recv_into(buffer)
        except TimeoutError:
            self.on_timeout(self.started)
            self.deadline = math.inf  # one expiry, one count: the connection is closed next
            raise
        self.started = self.started or n > 0
        return n


class ConnectionSlots:
    """At most ``cap`` open connections; each is waiting (for its next request) or busy.

    The acceptor calls :meth:`admit`, each connection's thread :meth:`waiting` before it reads a
    request, :meth:`busy` once the request is in (and before it writes), :meth:`release` at the end.
    """

    def __init__(self, cap: int, metrics: ConnectionMetrics) -> None:
        self.cap = cap
        self.metrics = metrics
        for reason in REASONS:
            metrics.closed.labels(reason=reason)  # exported as 0 from the start
        self._cond = threading.Condition()
        self._open = 0
        #: connections waiting for a request, the one waiting longest first
        self._waiting: OrderedDict[socket.socket, None] = OrderedDict()
        self._evicted: set[socket.socket] = set()

    def admit(self, sock: socket.socket) -> bool:
        """Make room for a new connection (closing the longest-waiting one at the cap); False: refuse."""
        with self._cond:
            if self._open >= self.cap:
                if not self._waiting:  # every connection is being answered: refuse, don't queue
                    self.metrics.closed.labels(reason="refused").inc()
                    return False
                victim, _ = self._waiting.popitem(last=False)
                self._evicted.add(victim)
                self.metrics.closed.labels(reason="evicted").inc()
                with contextlib.suppress(OSError):  # OSError: its thread is already closing it
                    victim.shutdown(socket.SHUT_RDWR)  # its thread's recv returns at once: EOF
                if not self._cond.wait_for(lambda: self._open < self.cap, timeout=EVICT_WAIT_S):
                    self.metrics.closed.labels(reason="refused").inc()
                    return False
            self._open += 1
            self.metrics.open.set(self._open)
            return True

    def waiting(self, sock: socket.socket) -> bool:
        """The connection waits for its next request (evictable from now); False: it was evicted."""
        with self._cond:
            if sock in self._evicted:
                return False
            self._waiting[sock] = None
            self._waiting.move_to_end(sock)
            return True

    def busy(self, sock: socket.socket) -> bool:
        """The connection's request is in: no longer evictable. False: it was evicted already."""
        with self._cond:
            if sock in self._evicted:
                return False
            self._waiting.pop(sock, None)
            return True

    def release(self, sock: socket.socket) -> None:
        with self._cond:
            self._waiting.pop(sock, None)
            self._evicted.discard(sock)
            self._open -= 1
            self.metrics.open.set(self._open)
            self._cond.notify_all()

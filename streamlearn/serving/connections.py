"""The prediction server's connections: how many, how long a request may take, who holds a thread.

A connection costs a thread only while the server answers it. Until its request has arrived in
full (request line, headers and a body of the announced length) it waits in the
:class:`WaitingRoom`: one thread, one ``selector``, a buffer per connection. So a client that opens
thousands of connections and sends nothing, or trickles header bytes (slowloris), costs a socket
and a few bytes each, never a thread, and the room closes each one
``serve.request_timeout_seconds`` after it started waiting, however slowly bytes keep coming.
Keep-alive connections go back to the room between requests.

At most ``serve.max_connections`` connections are open (room + answered). At the cap a new
connection makes room by closing the longest-waiting connection in the room that has not yet had
a request answered (a keep-alive client that has is closed only when no other remains). When every
connection is being answered, a new one waits (in the listen backlog, no thread) up to
``serve.request_timeout_seconds`` for one to finish, so a burst of requests is answered, not
refused; then it gets 503, written without a thread.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import re
import selectors
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamlearn.metrics import ConnectionMetrics
from streamlearn.serving import api

log = logging.getLogger(__name__)

REASONS = ("evicted", "refused", "idle_timeout", "request_timeout")
#: a request's head larger than this goes to a thread as it is (the handler refuses it: 414/431)
MAX_HEAD_BYTES = 64 * 1024
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(\S*)[ \t]*\r?$", re.I | re.M)
_TRANSFER_ENCODING = re.compile(rb"^transfer-encoding:", re.I | re.M)


def _response(status: str, message: str) -> bytes:
    """A complete HTTP answer that closes the connection (sent by the room, which has no handler)."""
    body = api.error_body(message)
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


REFUSED = _response("503 Service Unavailable", "too many connections, all busy (serve.max_connections)")
INCOMPLETE = _response(
    "400 Bad Request", "the connection ended before the whole request (head and Content-Length body) arrived"
)
TIMED_OUT = _response(
    "408 Request Timeout", "the request did not arrive in time (serve.request_timeout_seconds)"
)


def request_complete(buf: bytes | bytearray, max_body: int) -> bool:
    """Whether ``buf`` holds a whole request a thread can answer without waiting for the client.

    Anything the handler will refuse from the head alone (no or a bad length, too large, chunked,
    a one-word or HTTP/0.9 request line) counts as complete: the handler answers it at once.
    """
    line_end = buf.find(b"\n")
    if line_end < 0:
        return len(buf) >= MAX_HEAD_BYTES
    if len(bytes(buf[:line_end]).split()) < 3:
        return True
    end = _HEAD_END.search(buf, line_end - 1 if line_end > 0 else 0)
    if end is None:
        return len(buf) >= MAX_HEAD_BYTES
    head = bytes(buf[: end.start()])
    lengths = _CONTENT_LENGTH.findall(head)
    if len(lengths) != 1 or _TRANSFER_ENCODING.search(head) or not lengths[0].isdigit():
        return True
    n = int(lengths[0])
    return n > max_body or len(buf) - end.end() >= n


@dataclass(eq=False)
class Conn:
    """A client connection and what has arrived of its next request."""

    sock: socket.socket
    address: Any
    buf: bytearray = field(default_factory=bytearray)
    #: when its current wait began (monotonic); the request must be in by ``since + timeout``
    since: float = 0.0
    #: requests answered on it so far
    served: int = 0


class RequestReader:
    """``rfile`` for the handler: what the room buffered, then the socket, under one deadline.

    ``on_timeout()`` is called once when the deadline passes, then ``TimeoutError`` is raised.
    """

    def __init__(self, conn: Conn, deadline: float, on_timeout: Callable[[], None]) -> None:
        self.sock = conn.sock
        self.buf = conn.buf
        self.deadline = deadline
        self.on_timeout = on_timeout
        self.closed = False

    def _fill(self) -> bool:
        """One more recv into the buffer; False at end of stream."""
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError("the request did not arrive in time")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
        except TimeoutError:
            self.on_timeout()
            raise
        self.buf += data
        return bool(data)

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def readline(self, limit: int = -1) -> bytes:
        while True:
            end = self.buf.find(b"\n", 0, limit if limit >= 0 else len(self.buf))
            if end >= 0:
                return self._take(end + 1)
            if 0 <= limit <= len(self.buf) or not self._fill():
                return self._take(limit if limit >= 0 else len(self.buf))

    def read(self, n: int) -> bytes:
        while len(self.buf) < n and self._fill():
            pass
        return self._take(n)

    def close(self) -> None:
        self.closed = True


def _send_and_close(sock: socket.socket, answer: bytes = b"") -> None:
    with contextlib.suppress(OSError):
        if answer:
            sock.setblocking(False)  # what fits in the send buffer; never wait on this client
            sock.send(answer)
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class Workers:
    """Daemon threads that answer connections; a new one only when none is idle (at most ``limit``,
    which the connection cap guarantees: a job is an answered connection)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._count = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1  # that one takes it
            elif self._count < self.limit:
                self._count += 1
                threading.Thread(target=self._work, name=f"http-{self._count}", daemon=True).start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            self._jobs.get()()
            with self._lock:
                self._idle += 1


class WaitingRoom:
    """Every connection that waits for its next request, on one thread (see the module docstring).

    ``hand_off(conn)`` is called (on the room's thread) with a connection whose request is in; the
    caller answers it on a worker and gives it back with :meth:`put_back` (keep-alive) or
    :meth:`closed`.
    """

    def __init__(
        self,
        cap: int,
        timeout_s: float,
        max_body: int,
        metrics: ConnectionMetrics,
        hand_off: Callable[[Conn], None],
    ) -> None:
        self.cap, self.timeout_s, self.max_body = cap, timeout_s, max_body
        self.metrics = metrics
        for reason in REASONS:
            metrics.closed.labels(reason=reason)  # exported as 0 from the start
        self.hand_off = hand_off
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._inbox: queue.SimpleQueue[tuple[str, Conn]] = queue.SimpleQueue()
        #: connections in the room by socket, the one waiting longest first
        self._room: OrderedDict[socket.socket, Conn] = OrderedDict()
        self._busy = 0  # handed off and not yet back or closed
        #: accepted while the room was full of busy connections: let in as one finishes (no thread)
        self._parked: deque[Conn] = deque()
        #: accepted and not yet in the room (on their way in the inbox, or parked); at most ``cap``,
        #: beyond that the accepting thread waits and new connections wait in the listen backlog
        self._queued = 0
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="http-room", daemon=True)
        self.thread.start()

    # -- from other threads ---------------------------------------------------------------------
    def add(self, sock: socket.socket, address: Any) -> None:
        """A newly accepted connection (on the accepting thread). While ``cap`` connections are
        already queued for the room (every one in it busy), it waits for one to get in, so the rest
        wait in the listen backlog and a burst of requests is answered, not refused; 503 after
        the request timeout."""
        with self._space:
            free = self._space.wait_for(lambda: self._queued < self.cap or self._stop, self.timeout_s)
            if free:
                self._queued += 1
        if free:
            self._post("new", Conn(sock, address))
        else:
            self.metrics.closed.labels(reason="refused").inc()
            _send_and_close(sock, REFUSED)

    def put_back(self, conn: Conn) -> None:
        """An answered keep-alive connection waits for its next request again."""
        self._post("back", conn)

    def closed(self, conn: Conn) -> None:
        """A handed-off connection was closed by its worker."""
        with self._lock:
            self._busy -= 1
        self._update_open()
        self._wake()  # a parked connection may come in now

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self._space.notify_all()
        self._wake()
        self.thread.join(5)

    def _post(self, kind: str, conn: Conn) -> None:
        self._inbox.put((kind, conn))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending anyway
            self._wake_w.send(b"\0")

    # -- the room's thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop:
                deadlines = [c.since + self.timeout_s for c in itertools.islice(self._room.values(), 1)]
                deadlines += [c.since + self.timeout_s for c in itertools.islice(self._parked, 1)]
                # the first in the room waits longest: its deadline comes first
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                for key, _ in self._sel.select(timeout):
                    if key.fileobj is self._wake_r:
                        self._drain_inbox()
                    else:
                        self._readable(key.data)
                self._expire()
                while self._parked and not self._full():
                    self._dequeue()
                    self._enter(self._parked.popleft())
        finally:
            for conn in [*self._room.values(), *self._parked]:
                self._close(conn)
            self._parked.clear()
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _drain_inbox(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                kind, conn = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "back":
                with self._lock:
                    self._busy -= 1
                conn.served += 1
                self._enter(conn)
            else:
                self._admit(conn)

    def _dequeue(self) -> None:
        with self._space:
            self._queued -= 1
            self._space.notify()

    def _full(self) -> bool:
        with self._lock:
            return len(self._room) + self._busy >= self.cap

    def _admit(self, conn: Conn) -> None:
        if self._full():
            # Read what has arrived first: under a burst of connects, a request may be sitting
            # unread (it goes to a worker, not evicted) or a client gone (closed, room freed).
            for key, _ in self._sel.select(0):
                if key.fileobj is not self._wake_r:
                    self._readable(key.data)
        if self._full():
            victim = next((c for c in self._room.values() if not c.served), None)
            victim = victim or next(iter(self._room.values()), None)
            if victim is None:  # every connection is being answered: it waits its turn, threadless
                conn.since = time.monotonic()
                self._parked.append(conn)  # at most cap: add() counts it as queued
                return
            self.metrics.closed.labels(reason="evicted").inc()
            self._close(victim)
        self._dequeue()
        self._enter(conn)

    def _enter(self, conn: Conn) -> None:
        conn.since = time.monotonic()
        conn.sock.setblocking(False)
        self._room[conn.sock] = conn
        self._sel.register(conn.sock, selectors.EVENT_READ, conn)
        self._update_open()
        if conn.buf and request_complete(conn.buf, self.max_body):  # pipelined: the next one is in
            self._leave(conn)

    def _readable(self, conn: Conn) -> None:
        if self._room.get(conn.sock) is not conn:  # an event from before it left or was closed
            return
        try:
            data = conn.sock.recv(MAX_HEAD_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:  # reset by the client: a hang-up, not an error
            self.metrics.client_disconnects.inc()
            log.debug("%s hung up: %s", conn.address, exc)
            self._close(conn)
            return
        if not data:
            if conn.buf:  # the client stopped sending in the middle of a request
                self.metrics.client_disconnects.inc()
                # It may still be reading (a half-close after a Content-Length longer than the
                # body): tell it why there will be no answer to the request.
                self._close(conn, INCOMPLETE)
                return
            self._close(conn)
            return
        conn.buf += data
        if request_complete(conn.buf, self.max_body):
            self._leave(conn)

    def _leave(self, conn: Conn) -> None:
        """To a worker: out of the room, busy until put back or closed."""
        self._sel.unregister(conn.sock)
        del self._room[conn.sock]
        with self._lock:
            self._busy += 1
        self.hand_off(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._parked and self._parked[0].since + self.timeout_s <= now:
            self.metrics.closed.labels(reason="refused").inc()
            self._dequeue()
            _send_and_close(self._parked.popleft().sock, REFUSED)
        while self._room:
            first = next(iter(self._room.values()))
            if first.since + self.timeout_s > now:
                return
            if first.buf:
                self.metrics.closed.labels(reason="request_timeout").inc()
                self._close(first, TIMED_OUT)
            else:
                self.metrics.closed.labels(reason="idle_timeout").inc()
                self._close(first)

    def _close(self, conn: Conn, answer: bytes = b"") -> None:
        """Out of the room and closed (``answer`` sent first, as far as it fits)."""
        if self._room.pop(conn.sock, None) is not None:
            self._sel.unregister(conn.sock)
        _send_and_close(conn.sock, answer)
        self._update_open()

    def _update_open(self) -> None:
        with self._lock:
            self.metrics.open.set(len(self._room) + self._busy)

"""Fleet tests' helpers: daemons as processes whose logs are drained in the background, a paced
producer, and the uninterrupted reference run (same seed, CPU) that every fleet run must equal."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamlearn.checkpoint import CheckpointStore
from streamlearn.produce import produce, stream_messages
from tests.integration.daemon_process import start_daemon


class Member:
    """``streamlearn run`` in a child process; its log read by a thread (never blocks the daemon)."""

    def __init__(self, config: Path) -> None:
        self.proc = start_daemon(config)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("")  # EOF marker
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout_s: float = 60.0, start: int = 0) -> tuple[int, re.Match[str]]:
        """(line index, match) of the first line at or after ``start`` matching ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return i, m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == ""):
                    raise AssertionError(f"{pattern!r} not in the log:\n{''.join(self.lines[-40:])}")
                self._cond.wait(left)

    def has(self, pattern: str, start: int = 0) -> bool:
        with self._cond:
            return any(re.search(pattern, line) for line in self.lines[start:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


class PacedProducer:
    """Sends the first ``n`` examples of a stream at ``rate`` per second from a thread."""

    def __init__(self, bootstrap: str, topic: str, n: int, rate: float) -> None:
        self.sent = 0
        self.thread = threading.Thread(
            target=lambda: setattr(
                self,
                "sent",
                produce(
                    stream_messages("rotated-mnist-10k", n_tasks=2),
                    bootstrap,
                    topic,
                    limit=n,
                    rate=rate,
                    progress=None,
                ),
            ),
            daemon=True,
        )
        self.thread.start()

    def join(self) -> int:
        self.thread.join(timeout=300)
        assert not self.thread.is_alive()
        return self.sent


def late_commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    """The offset commit a paused active may have had in flight: the same request its consumer sends
    (``assign()``, no group generation, so the broker cannot refuse it), landing after the takeover."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.commit({tp: OffsetAndMetadata(offset, "", -1)})
    finally:
        c.close()


def write_config(cfg: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def final_state(ckpt_dir: str) -> dict[str, Any]:
    found = CheckpointStore(ckpt_dir).latest()
    assert found is not None, f"no checkpoint in {ckpt_dir}"
    return found[1]


def assert_same_model(reference: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> None:
    for name, v in reference.items():
        assert torch.equal(v, params[name]), f"{name} differs from the uninterrupted run"


def copy(cfg: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(cfg))


def listed(ckpt_dir: str) -> set[tuple[str, int]]:
    """(name, epoch) of every checkpoint in the store."""
    return {(c.path.name, c.epoch) for c in CheckpointStore(ckpt_dir).list()}


class Relay:
    """A TCP relay on loopback in front of a server, that can be cut: ``down()`` closes the port and
    every open connection (the server is unreachable, as in a network outage), ``up()`` reopens it.
    The server behind it (moto_server, which keeps its objects in memory) lives on meanwhile."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        self.port = srv.getsockname()[1]
        srv.listen(64)
        self._listener = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def down(self) -> None:
        assert self._listener is not None
        self._listener.close()
        self._listener = None
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self._conns.clear()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

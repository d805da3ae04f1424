"""A daemon in its own process, observed only from outside: its log, its /metrics, its port.

Tests that kill the daemon need it in a child process; these helpers read what any operator sees
(log lines, the Prometheus text, whether the port answers), never the daemon's attributes.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def start_daemon(config: Path) -> subprocess.Popen[str]:
    """``streamlearn run -c config`` with INFO logs on its stdout (stderr merged)."""
    env = dict(os.environ, STREAMLEARN_LOG_LEVEL="INFO")
    return subprocess.Popen(
        [sys.executable, "-m", "streamlearn.cli", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


class DaemonLog:
    """The daemon's log, read as it comes; the pipe must be drained or the daemon blocks on a write."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._searched = 0  # wait_for looks at each line once, in order

    def wait_for(self, pattern: str, timeout_s: float = 60.0) -> re.Match[str]:
        """The first line after the previous match that matches ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while True:
            while self._searched < len(self.lines):
                line = self.lines[self._searched]
                self._searched += 1
                m = rx.search(line)
                if m:
                    return m
            if time.monotonic() > deadline:
                break
            line = self.proc.stdout.readline()  # the daemon logs at least once a second
            if not line:
                break
            self.lines.append(line)
        raise AssertionError(f"{pattern!r} not in the log:\n{''.join(self.lines[-30:])}")

    def port(self) -> int:
        return int(self.wait_for(r"serving on http://[^ ]+:(\d+) ")[1])


def scrape(port: int) -> Samples:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        text = resp.read().decode()
    finally:
        conn.close()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def wait_for(
    pred: Callable[[], bool], timeout_s: float = 30.0, show: Callable[[], object] | None = None
) -> None:
    """Poll ``pred`` until true; on timeout the message includes ``show()`` (what was seen instead)."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            seen = f"; saw {show()!r}" if show is not None else ""
            raise AssertionError(f"condition not reached in {timeout_s} s{seen}")
        time.sleep(0.1)


def accepts(port: int) -> bool:
    """Whether anything listens on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(2.0)
        return s.connect_ex(("127.0.0.1", port)) == 0

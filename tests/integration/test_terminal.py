"""`streamlearn demo` as a person sees it: under a pseudo-terminal, and through a pipe.

On a terminal the status line stays at the bottom and log lines scroll above it; the transcript is
replayed the way a terminal would (``\\r`` to column 0, ``\\x1b[2K`` erases the row) and every row that
was ever visible must be one thing: a log line, the status line, or the demo's own text.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

pytestmark = pytest.mark.integration

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")
STATUS = "[demo] learned"
ERASE = "\x1b[2K"
# A short demo with a progress report every half second: several status redraws between log lines.
DEMO = [
    "demo",
    "--learner",
    "sgd",
    "--max-examples",
    "2500",
    "--rate",
    "1000",
    "--set",
    "serve.port=0",
    "--set",
    "runtime.log_every_seconds=0.5",
]


def replay(transcript: str) -> tuple[list[str], list[str]]:
    """(rows scrolled into the history, rows erased while visible) of a terminal fed ``transcript``."""
    history: list[str] = []
    erased: list[str] = []
    row: list[str] = []
    col = i = 0
    while i < len(transcript):
        if transcript.startswith(ERASE, i):
            erased.append("".join(row).rstrip())
            row, i = [], i + len(ERASE)
            continue
        c = transcript[i]
        i += 1
        if c == "\r":
            col = 0
        elif c == "\n":
            history.append("".join(row).rstrip())
            row, col = [], 0
        else:
            assert c != "\x1b", f"an escape sequence other than erase-line at {transcript[i - 1 : i + 10]!r}"
            row.extend(" " * (col - len(row)))
            if col < len(row):
                row[col] = c
            else:
                row.append(c)
            col += 1
    if row:
        history.append("".join(row).rstrip())
    return history, [e for e in erased if e]


def run_in_pty(
    args: list[str], columns: int = 200, timeout: float = 240, interrupt_at: str | None = None
) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal of ``columns``; SIGINT (what Ctrl-C sends) once ``interrupt_at``
    has been written. Returns the exit code and everything written."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlearn.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
        if interrupt_at is not None and interrupt_at in b"".join(chunks).decode("utf-8", "replace"):
            proc.send_signal(signal.SIGINT)
            interrupt_at = None
    os.close(master)
    rc = proc.wait(timeout=30)
    return rc, b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_log_lines_scroll_above_one_status_line() -> None:
    rc, transcript = run_in_pty(DEMO)
    assert rc == 0, transcript[-3000:]
    history, erased = replay(transcript)

    # The status line was drawn, and log lines were written over it (the case that used to share a row).
    assert sum(e.startswith(STATUS) for e in erased) >= 2, transcript[-3000:]
    assert re.search(re.escape("\r" + ERASE) + r"\d{4}-\d\d-\d\d ", transcript)
    # Every row ever visible is either a log line, the status line, or neither's text at all.
    for line in history + erased:
        if STATUS in line:
            assert line.startswith(STATUS) and not LOG_LINE.search(line), line
        if LOG_LINE.search(line):
            assert LOG_LINE.match(line) and STATUS not in line, line
    # The status line never scrolls into the history: it is erased before anything is written.
    assert not [line for line in history if line.startswith(STATUS)]
    assert all(e.startswith(STATUS) for e in erased), erased

    # Where to look, printed once serving, and the summary at the end.
    page = next(line for line in history if line.startswith("open   http://127.0.0.1:"))
    port = re.search(r":(\d+)/", page)
    assert port is not None
    assert f"http://127.0.0.1:{port[1]}/metrics" in transcript
    assert f"curl -s http://127.0.0.1:{port[1]}/predict" in transcript
    assert "streamlearn demo finished: sgd" in history
    assert any(re.match(r"  learned +2500 examples", line) for line in history)
    assert any(line.startswith("  checkpoints  ") and "ckpt-" in line for line in history)


def test_through_a_pipe_there_are_plain_lines_only() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "streamlearn.cli", *DEMO],
        capture_output=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for name, out in (("stdout", res.stdout), ("stderr", res.stderr)):
        assert b"\r" not in out, name
        assert b"\x1b" not in out, name
    err = res.stderr.decode()
    assert STATUS not in err  # no status line off a terminal: the progress is in the log lines
    assert "INFO streamlearn.daemon: learned" in err
    assert "open   http://127.0.0.1:" in err
    assert "learned      2500 examples" in res.stdout.decode()


def test_ctrl_c_on_a_terminal_prints_a_summary_below_the_log() -> None:
    args = [a for a in DEMO if a not in ("--max-examples", "2500")]  # runs until interrupted
    rc, transcript = run_in_pty(args, interrupt_at=STATUS)
    assert rc == 0, transcript[-3000:]
    history, erased = replay(transcript)
    assert any(e.startswith(STATUS) for e in erased)  # it was showing when Ctrl-C came
    assert any("received SIGINT" in line for line in history)
    assert "Traceback" not in transcript
    at = history.index("streamlearn demo stopped (Ctrl-C): sgd")
    summary = history[at + 1 : at + 5]
    assert [line.split()[0] for line in summary] == ["learned", "accuracy", "rejected", "checkpoints"]
    assert re.match(
        r"  checkpoints  [1-9]\d* written, newest: /\S+/ckpt-\d+-\d+\.slc \(temporary", summary[3]
    )
    assert not [line for line in history if line.startswith(STATUS)]

"""Log set-up for the command line: one format, a status line on a terminal, and kafka-python kept
from flooding the log.

On a terminal, ``demo`` and ``run`` keep one status line at the bottom and log lines scroll above it:
every write clears the status line (``\\r\\x1b[2K``), writes the log record and redraws the status line,
under one lock, so a log line and the status line never share a terminal line. Elsewhere (CI,
``docker logs``, a pipe) the status line is not drawn: plain log lines, no carriage returns, no escape
codes.

While a broker is away kafka-python logs every failed reconnect and metadata refresh — about 30
lines a second — so an hour's outage would bury everything else. The daemon says itself what is
going on ("broker unreachable ...", "broker reachable again ..."); kafka-python's repeats of the
same message are let through once per ``every_s`` with a count of what was held back.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RepeatLimiter(logging.Filter):
    """Pass a record of a ``prefix`` logger at most once per ``every_s`` per (logger, message template)."""

    def __init__(self, prefix: str = "kafka", every_s: float = 60.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.every_s = every_s
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (passed at, held back since)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == self.prefix or record.name.startswith(self.prefix + ".")):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            passed, held = self._seen.get(key, (-float("inf"), 0))
            if now - passed < self.every_s:
                self._seen[key] = (passed, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} [and {held} more like this in the last {now - passed:.0f} s]"
        return True


class Throttled:
    """A logger's ``warning`` at most once per ``every_s``, with a count of the calls held back.

    For a condition that can repeat per message (a poisoning burst): the first line says it at once,
    the next says how many more there were.

    >>> import logging
    >>> t = Throttled(logging.getLogger("demo"), every_s=60.0)
    >>> t.warning("a"), t.warning("b"), t.held
    (True, False, 1)
    """

    def __init__(self, logger: logging.Logger, every_s: float) -> None:
        self.logger = logger
        self.every_s = every_s
        self.held = 0
        self._passed = -float("inf")

    def warning(self, msg: str, *args: object) -> bool:
        now = time.monotonic()
        if now - self._passed < self.every_s:
            self.held += 1
            return False
        if self.held:
            msg = f"{msg} [and {self.held} more like this in the last {now - self._passed:.0f} s]"
        self.logger.warning(msg, *args)
        self._passed, self.held = now, 0
        return True


#: back to column 0, then erase the whole line: what the status line is removed with before a write
CLEAR_LINE = "\r\x1b[2K"


class StatusLine:
    """One line kept at the bottom of a terminal, with everything else written above it.

    ``tty`` (default: ``stream.isatty()``) False makes :meth:`set` and :meth:`clear` do nothing and
    :meth:`write_above` a plain write, so a pipe gets no carriage return and no escape code.

    >>> import io
    >>> out = io.StringIO()
    >>> s = StatusLine(out, tty=True, width=40)
    >>> s.set("[demo] learned 10"); s.write_above("a log line"); s.clear()
    >>> out.getvalue().split("\\x1b[2K")
    ['\\r', '[demo] learned 10\\r', 'a log line\\n[demo] learned 10\\r', '']
    """

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, width: int | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self._width = width
        self._text = ""
        # One lock for clear + write + redraw: a log record from another thread never lands mid-line.
        # Reentrant: a signal handler that logs (Ctrl-C's "received SIGINT") runs in the main thread,
        # possibly while that thread is inside write_above; a plain Lock would deadlock it there.
        self._lock = threading.RLock()

    def width(self) -> int:
        """Columns of the terminal; a longer status line would wrap, and the clear erases one row only."""
        if self._width is not None:
            return self._width
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 0
        return columns or 80  # 0: a pseudo-terminal whose size nobody set

    def set(self, text: str) -> None:
        """Show ``text`` (one line, cut to the terminal's width) as the status line."""
        if not self.tty:
            return
        text = text.replace("\n", " ")[: max(self.width() - 1, 1)]
        with self._lock:
            self._text = text
            self._write(CLEAR_LINE + text)

    def write_above(self, text: str) -> None:
        """Write ``text`` (one or more lines) above the status line, which is redrawn below it."""
        with self._lock:
            if self.tty and self._text:
                self._write(CLEAR_LINE + text + "\n" + self._text)
            else:
                self._write(text + "\n")

    def clear(self) -> None:
        """Remove the status line (before a final summary, or at exit)."""
        with self._lock:
            if self.tty and self._text:
                self._write(CLEAR_LINE)
            self._text = ""

    def _write(self, data: str) -> None:
        self.stream.write(data)
        self.stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class StatusLineHandler(logging.Handler):
    """A logging handler that writes each record above a :class:`StatusLine`."""

    def __init__(self, status: StatusLine) -> None:
        super().__init__()
        self.status = status

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.status.write_above(self.format(record))
        except Exception:
            self.handleError(record)


def configure(level: str, stream: TextIO | None = None) -> StatusLine:
    """Log to ``stream`` (stderr) at ``level``; kafka-python at WARNING (its INFO narrates every
    connection) unless ``level`` is DEBUG, and its repeats limited.

    Returns the :class:`StatusLine` the log writes above: a verb that shows progress sets it. Where the
    root logger was configured already (an embedding program, pytest), the records go to its handlers,
    and the returned status line draws nothing, so it cannot share a line with them."""
    handler = StatusLineHandler(StatusLine(stream))
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    status = handler.status if handler in logging.getLogger().handlers else StatusLine(stream, tty=False)
    if status.tty:
        logging.captureWarnings(True)  # a warning printed to stderr directly would share the status row
    if level.upper() != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.WARNING)
        # "Task ... ran for 0.3s ... blocking the event loop": kafka-python's I/O thread waiting for
        # the GIL while the learner computes. Expected in this process, and nothing to act on.
        logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
        for h in logging.getLogger().handlers:
            h.addFilter(RepeatLimiter())
    return status

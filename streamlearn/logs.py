"""Log set-up for the command line: one format, and kafka-python kept from flooding the log.

While a broker is away kafka-python logs every failed reconnect and metadata refresh — about 30
lines a second — so an hour's outage would bury everything else. The daemon says itself what is
going on ("broker unreachable ...", "broker reachable again ..."); kafka-python's repeats of the
same message are let through once per ``every_s`` with a count of what was held back.
"""

from __future__ import annotations

import logging
import threading
import time

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


def configure(level: str) -> None:
    """Log to stderr at ``level``; kafka-python at WARNING (its INFO narrates every connection)
    unless ``level`` is DEBUG, and its repeats limited."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    if level.upper() != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.WARNING)
        # "Task ... ran for 0.3s ... blocking the event loop": kafka-python's I/O thread waiting for
        # the GIL while the learner computes. Expected in this process, and nothing to act on.
        logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
        for handler in logging.getLogger().handlers:
            handler.addFilter(RepeatLimiter())

"""Graceful stop on SIGTERM and SIGINT (Ctrl-C): the long-running verbs finish the current update,
checkpoint and exit, and remember which signal asked (their summary says so)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any

log = logging.getLogger("streamlearn")


class StopSignals:
    """Installs the handlers; ``received`` lists the names of the signals that arrived."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self.stop = stop
        self.received: list[str] = []
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        log.info("received %s: finishing the current update, then checkpoint and exit", name)
        self.stop()

    @property
    def stopped_by(self) -> str | None:
        """How a person would name the first stop request ("Ctrl-C", "SIGTERM"), None if none came."""
        if not self.received:
            return None
        return "Ctrl-C" if self.received[0] == "SIGINT" else self.received[0]

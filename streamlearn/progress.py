"""The daemon's progress line, every ``runtime.log_every_seconds``, and the same to a callback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("streamlearn.daemon")  # the daemon's line, under the daemon's logger


def report_progress(s: dict[str, Any], on_progress: Callable[[dict[str, Any]], None] | None) -> None:
    """Log the summary ``s`` (with ``examples_per_s`` and ``lag``); hand it to ``on_progress``."""
    log.info(
        "learned %d (%.1f ex/s), rejected %d, prequential accuracy %.4f, rolling %.4f, lag %d",
        s["learned"],
        s["examples_per_s"],
        s["rejected"],
        s["prequential_accuracy"],
        s["rolling_accuracy"],
        s["lag"],
    )
    if on_progress is not None:
        on_progress(s)

"""The daemon's progress line, every ``runtime.log_every_seconds``, and the same to a callback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamlearn.metrics import counter_value

if TYPE_CHECKING:
    from streamlearn.metrics import LearnerMetrics
    from streamlearn.model_state import ModelState

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


def model_summary(
    model: ModelState, prom: LearnerMetrics, rate: float, offsets: dict[str, int]
) -> dict[str, Any]:
    """Model-lifetime counts (learned, consumed, rejected) and this process's (checkpoints)."""
    snap = model.prequential.snapshot()
    rejected = model.counts.rejected
    return {
        "examples_per_s": rate,
        "learner": model.learner.name,
        "learned": model.learner.examples,
        "consumed": model.counts.consumed,
        "rejected": sum(rejected.values()),
        "rejected_by_reason": dict(rejected),
        "prequential_accuracy": snap["accuracy"],
        "rolling_accuracy": snap["rolling_accuracy"],
        "kappa": snap["kappa"],
        "drifts": snap["drifts"],
        "checkpoints": int(counter_value(prom.checkpoints)),
        "checkpoint_failures": int(counter_value(prom.checkpoint_failures)),
        "offsets": offsets,
    }

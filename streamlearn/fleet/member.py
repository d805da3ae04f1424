"""A fleet member's life: standby, active, deposed, standby again — until it is asked to stop.

``Daemon.run`` hands itself here when ``fleet.enabled``. The process serves as a standby until it
holds the lease (:meth:`Fleet.wait_until_active`), then learns as the daemon always does. Three ways
out of learning:

- the stream's end or a stop request: it checkpoints, commits, releases the lease, and returns;
- a crash of the learning loop: the exception goes up, as it does without a fleet;
- *deposed* (a renewal refused: another process took the lease over while this one was paused or
  cut off): the loop stops without checkpointing or committing, the model it learned is dropped
  (its successor's checkpoints are the truth now), and the process becomes a standby again in place
  — same port, ``streamlearn_role{role="standby"}``, ready body ``role: standby`` — that may take
  over later, restoring the newest checkpoint like any standby.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from streamlearn.config import Config
from streamlearn.delivery import Checkpointer
from streamlearn.fleet.leader import Fleet
from streamlearn.ingest import fastx

log = logging.getLogger(__name__)


class Learning(Protocol):
    """What the daemon offers a fleet member (``streamlearn.daemon.Daemon``)."""

    #: a person or a signal asked the process to stop (a deposition does not)
    stop_requested: bool

    def learn(self) -> dict[str, Any]:
        """Restore the newest checkpoint, serve, learn until stopped; the run's summary."""
        ...

    def step_down(self) -> None:
        """Drop the model and positions for fresh ones (a standby again)."""
        ...

    def summary(self) -> dict[str, Any]: ...


def run_member(
    cfg: Config,
    registry: CollectorRegistry,
    checkpointer: Checkpointer,
    stop: threading.Event,
    daemon: Learning,
) -> dict[str, Any]:
    """Standby ⇄ active until ``stop`` is requested or the active reaches the stream's end."""
    fleet = Fleet(cfg, registry, checkpointer.store, on_deposed=stop.set)
    checkpointer.fence = fleet
    summary = daemon.summary()
    # A hot standby: the decoder's compiled scanner is built (or loaded from numba's cache) while
    # waiting, not in the takeover's first poll (up to ~1.3 s when it compiles).
    threading.Thread(target=fastx.available, name="warm-decoder", daemon=True).start()
    while fleet.wait_until_active(stop):
        try:
            summary = daemon.learn()
        finally:
            deposed = fleet.leave()  # releases the lease unless another process holds it now
        if not deposed or daemon.stop_requested:
            return summary
        daemon.step_down()
        log.warning(
            "fleet: stepped down to standby: the model learned under epoch %d is dropped; the newest "
            "checkpoint is served, and restored if this process becomes the active again",
            fleet.epoch,
        )
    return summary

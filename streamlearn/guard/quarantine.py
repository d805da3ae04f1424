"""Quarantine: the examples a rollback unlearned, copied unchanged to a topic for review.

Each message keeps its bytes as sent; the headers say where it came from
(``streamlearn.source.topic/partition/offset``) and why (``streamlearn.reason: rolled_back``), the
same headers as a dead letter, so the same tools read both. The rollback happens only once every
message is acknowledged (:meth:`Quarantine.roll_back`); a kill -9 before the rollback's checkpoint
restarts from the checkpoint before it (challenger, champion and journal), which rolls back again:
a message may then be quarantined twice (its headers tell the copies apart), never lost.
After review, ``streamlearn produce --from-topic examples.quarantine --to-topic examples``
sends them back to be learned.
"""

from __future__ import annotations

import logging
from typing import Protocol

from streamlearn.guard.guardrails import Guardrails

log = logging.getLogger(__name__)

#: the reason header of a quarantined message
ROLLED_BACK = "rolled_back"


class Sink(Protocol):
    """What the quarantine writes to: ``ingest.deadletter.DeadLetterSink`` on its own topic (or,
    in the benchmark, a list)."""

    def send(
        self, value: bytes | None, *, reason: str, detail: str, topic: str, partition: int, offset: int
    ) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...


class Quarantine:
    """Sends a rollback's journal and rolls back once all of it is acknowledged."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._sent = 0  # journal entries already sent by an attempt whose flush failed

    def send(self, messages: list[tuple[str, int, int, bytes | None]], detail: str) -> int:
        """Quarantine ``messages`` (topic, partition, offset, value) and wait for the topic to
        acknowledge them (raises if it does not); returns how many."""
        for topic, partition, offset, raw in messages:
            self.sink.send(
                raw, reason=ROLLED_BACK, detail=detail, topic=topic, partition=partition, offset=offset
            )
        self.sink.flush()
        return len(messages)

    def roll_back(self, guard: Guardrails, detail: str) -> int | None:
        """Quarantine ``guard.journal``, then reset the learner to the champion. Returns the number
        of examples quarantined, or None when the topic did not acknowledge them (nothing rolled
        back: the next call sends only what this one did not, and tries again)."""
        journal = guard.journal
        for topic, partition, offset, raw in journal[self._sent :]:
            self.sink.send(
                raw, reason=ROLLED_BACK, detail=detail, topic=topic, partition=partition, offset=offset
            )
        self._sent = len(journal)
        try:
            self.sink.flush()
        except Exception as exc:  # KafkaError and friends: the broker is slow or away
            log.error("rollback postponed: the quarantine topic did not acknowledge: %s", exc)
            return None
        self._sent = 0
        guard.roll_back()
        return len(journal)

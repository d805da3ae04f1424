"""The delivery guarantee: what may be committed, and committing it in the safe order.

A checkpoint records, per partition, the offset after the last message fully handled (learned or
dead-lettered); examples read but not yet learned (:class:`Pending`) hold it back. :class:`Checkpointer`
writes in the one order that loses nothing: dead letters acknowledged → checkpoint durable → offsets
committed to Kafka (or owed until the broker is back). On start it restores the newest good
checkpoint and hands back its offsets, where reading resumes (:func:`resume`). A position that has
left the log is never skipped silently (:func:`reset_out_of_range`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kafka import TopicPartition

from streamlearn.checkpoint import CheckpointStore
from streamlearn.errors import CheckpointError
from streamlearn.ingest.deadletter import DeadLetterSink
from streamlearn.ingest.decode import Example
from streamlearn.ingest.source import OffsetOutOfRange, Source, offset_key
from streamlearn.metrics import LearnerMetrics
from streamlearn.model_state import ModelState

log = logging.getLogger(__name__)

#: dead-letter reason of the messages of an update the non-finite guard undid (learners/undo.py)
NON_FINITE_UPDATE = "non_finite_update"
#: at a clean stop, how long to wait for old checkpoints still being deleted (object storage), so
#: that exactly ``checkpoint.keep`` remain; a store that is down must not hold the exit for long
REMOVALS_AT_STOP_S = 10.0


@dataclass
class Pending:
    """The micro-batch being collected: valid examples read but not yet learned, all of one task.

    ``first_offset`` holds, per partition, the offset of the batch's first example: until the batch
    is learned nothing from there on may be checkpointed or committed (:meth:`safe_offsets`).
    ``clear`` once the batch is learned. Rejected messages never enter it: they are done once
    dead-lettered.
    """

    examples: list[Example] = field(default_factory=list)
    first_offset: dict[TopicPartition, int] = field(default_factory=dict)
    #: where each example came from and its bytes as sent: an update the non-finite guard undoes
    #: is dead-lettered unchanged, like a message the decoder refused
    sources: list[tuple[TopicPartition, int, bytes]] = field(default_factory=list)
    #: the newest example of the last batch cleared (the live page shows one recent example)
    last: Example | None = None

    def add(self, ex: Example, tp: TopicPartition, offset: int, raw: bytes) -> None:
        self.examples.append(ex)
        self.sources.append((tp, offset, raw))
        self.first_offset.setdefault(tp, offset)

    def clear(self) -> None:
        if self.examples:
            self.last = self.examples[-1]
        self.examples.clear()
        self.sources.clear()
        self.first_offset.clear()

    def safe_offsets(self, next_offset: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Next offset per partition such that everything before it is learned or dead-lettered."""
        return {tp: min(nxt, self.first_offset.get(tp, nxt)) for tp, nxt in next_offset.items()}


def dead_letter_batch(
    sink: DeadLetterSink, pending: Pending, reason: str, detail: str, prom: LearnerMetrics
) -> None:
    """Send every message of the pending batch to the dead-letter topic unchanged, counted under
    ``reason``: it is then handled (not learned), and its offsets may be committed once acknowledged."""
    for tp, offset, raw in pending.sources:
        sink.send(raw, reason=reason, detail=detail, topic=tp.topic, partition=tp.partition, offset=offset)
        prom.rejected.labels(reason=reason).inc()


class Fence(Protocol):
    """Leadership (``streamlearn.fleet``): may this process still publish a checkpoint / commit offsets?"""

    def may_publish(self) -> bool: ...

    def may_commit(self) -> bool: ...


class Checkpointer:
    """Writes the model's checkpoints and commits their offsets; restores the newest on start."""

    def __init__(self, store: CheckpointStore, model: ModelState, prom: LearnerMetrics) -> None:
        self.store = store
        self.model = model
        self.prom = prom
        #: Unix time of the last durable checkpoint of this process (None: none yet)
        self.last_time: float | None = None
        #: offsets of a checkpoint written while the broker was down, committed once it is back
        self.commit_owed: dict[TopicPartition, int] | None = None
        #: set by a fleet's active learner: a deposed one publishes no checkpoint and commits nothing
        self.fence: Fence | None = None

    def write(
        self,
        source: Source,
        sink: DeadLetterSink,
        offsets: dict[TopicPartition, int],
        *,
        broker_up: bool,
        reason: str,
    ) -> bool:
        """Checkpoint the model with ``offsets`` and commit them; False if no checkpoint was written."""
        t0 = time.monotonic()
        if not broker_up and sink.pending:
            # Dead letters must be acknowledged before the offsets move past them; wait for the broker.
            log.warning(
                "checkpoint (%s) postponed: broker down with %d dead letters unacknowledged",
                reason,
                sink.pending,
            )
            return False
        try:
            sink.flush()  # dead letters must be durable before their offsets are committed
        except Exception as exc:
            self.prom.checkpoint_failures.inc()
            log.error("checkpoint skipped: dead-letter topic did not acknowledge: %s", exc)
            return False
        learned = self.model.learner.examples
        if self.fence is not None and not self.fence.may_publish():
            self.prom.checkpoint_failures.inc()
            log.error("checkpoint (%s) skipped: leadership not confirmed (fleet lease)", reason)
            return False
        try:
            # named by the messages read, not learned: a rollback lowers the learned count, and its
            # checkpoint must still be the newest (latest, kept) one
            path = self.store.save(self.model.state_dict(_keyed(offsets)), self.model.counts.consumed)
        except CheckpointError as exc:
            self.prom.checkpoint_failures.inc()
            log.error("checkpoint failed (learning continues, offsets not committed): %s", exc)
            return False
        self.last_time = time.time()
        if reason == "stop" and not self.store.wait_for_removals(REMOVALS_AT_STOP_S):
            log.warning("old checkpoints still being removed at stop: the next save removes them")
        fenced = broker_up and not self._may_commit()  # a deposed fleet member commits nothing
        committed = broker_up and not fenced and source.commit(offsets)
        self.commit_owed = None if committed else offsets
        self.prom.checkpoints.inc()
        self.prom.checkpoint_time.set(self.last_time)
        self.prom.checkpoint_seconds.observe(time.monotonic() - t0)
        log.info(
            "checkpoint (%s) %s: %d learned, offsets %s%s, %.0f ms",
            reason,
            path.name,
            learned,
            _keyed(offsets),
            _commit_note(committed, broker_up, fenced),
            1000 * (time.monotonic() - t0),
        )
        return True

    def _may_commit(self) -> bool:
        return self.fence is None or self.fence.may_commit()

    def retry_owed_commit(self, source: Source) -> None:
        if self.commit_owed is not None and self._may_commit() and source.commit(self.commit_owed):
            log.info("committed the offsets of the last checkpoint (the broker is back)")
            self.commit_owed = None

    def restore(self, config_fingerprint: str) -> dict[str, int]:
        """Load the newest good checkpoint into the model; its offsets (``{}`` when there is none)."""
        self.store.remove_stale_temporaries()
        found = self.store.latest()
        if found is None:
            log.info("no checkpoint in %s: starting a new model", self.store.dir)
            return {}
        info, state = found
        if state.get("config_fingerprint") != config_fingerprint:
            log.warning(
                "checkpoint %s was written with a different model/learner config; loading it anyway "
                "(it fails if the shapes differ)",
                info.path.name,
            )
        offsets = self.model.load_state_dict(state)
        log.info(
            "restored %s: %d examples learned, offsets %s",
            info.path.name,
            self.model.learner.examples,
            offsets,
        )
        return offsets


def resume(
    source: Source, restored: Mapping[str, int], *, group_commit: bool = True
) -> dict[TopicPartition, int]:
    """Assign the partitions and seek each to its restored offset (else the group's commit unless
    ``group_commit`` is False, else ``auto_offset_reset``); the next offset to read per partition.

    A fleet passes ``group_commit=False``: its committed offsets are for monitoring only, so a late
    commit from a deposed active (paused between its leadership check and its commit) cannot move
    where any learner resumes (``streamlearn.fleet``)."""
    parts = source.assign()
    origin = source.seek(restored, group_commit=group_commit)
    positions = {}
    for tp in parts:
        positions[tp] = source.position(tp)
        log.info("consuming %s from %s", offset_key(tp), origin[offset_key(tp)])
    return positions


def reset_out_of_range(
    source: Source, exc: OffsetOutOfRange, policy: str, prom: LearnerMetrics
) -> dict[TopicPartition, int]:
    """Apply kafka.offset_out_of_range: 'fail' re-raises (nothing checkpointed or committed past
    what was learned); 'earliest'/'latest' reset explicitly, loudly and counted. The new positions."""
    if policy == "fail":
        log.error("%s", exc)
        raise exc
    positions = {}
    for tp, wanted in exc.offsets.items():
        positions[tp] = new = source.reset(tp, policy)
        prom.offset_resets.labels(topic=tp.topic, partition=str(tp.partition), policy=policy).inc()
        log.warning(
            "%s: offset %d is out of range; kafka.offset_out_of_range=%s: reading continues at %d",
            offset_key(tp),
            wanted,
            policy,
            new,
        )
    return positions


def _commit_note(committed: bool, broker_up: bool, fenced: bool) -> str:
    if committed:
        return ""
    if not broker_up:
        return " (commit deferred: broker down)"
    return " (not committed: leadership not confirmed)" if fenced else " (commit failed)"


def _keyed(offsets: Mapping[TopicPartition, int]) -> dict[str, int]:
    return {offset_key(tp): int(off) for tp, off in offsets.items()}

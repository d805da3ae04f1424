"""The Kafka source: one learner owns a fixed set of partitions and decides where reading starts.

Partitions are assigned explicitly (no group rebalancing): one learner is one writer of its model,
so there is nothing to balance, and a restart resumes in milliseconds instead of waiting for a
group join. The consumer group is still used to *commit* offsets, so standard tools
(``kafka-consumer-groups``) show the learner's progress and lag.

The position the daemon checkpoints is "the offset after the last message that is fully handled"
(learned, or dead-lettered and flushed) — never past an example sitting in an unlearned batch.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, OffsetOutOfRangeError
from kafka.structs import OffsetAndMetadata

from streamlearn.config import KafkaConfig
from streamlearn.errors import StreamlearnError
from streamlearn.ingest.kafka_options import client_options, tls_handshake_error
from streamlearn.ingest.topics import create_topic

log = logging.getLogger(__name__)

#: records taken from kafka-python per poll of it: all it holds. It sends the next fetch only once its
#: buffer is empty, so draining it at once puts the fetch on the wire while the daemon learns the
#: records (kafka-python's IO thread reads the answer meanwhile); 100 at a time stalled once a fetch.
DRAIN_RECORDS = 100_000


class SourceError(StreamlearnError):
    """The source cannot start: topic missing, partitions unknown, broker unreachable."""


class OffsetOutOfRange(SourceError):
    """A partition's next offset is not in the log any more (retention, truncation, topic recreated).

    ``offsets`` maps each affected partition to the offset the daemon wanted to read next.
    """

    def __init__(self, offsets: Mapping[TopicPartition, int], why: str) -> None:
        self.offsets = dict(offsets)
        where = ", ".join(f"{offset_key(tp)} at offset {off}" for tp, off in self.offsets.items())
        super().__init__(
            f"{where}: {why}. Refusing to go on silently (that would skip or re-learn examples). "
            "If the topic was really reset, set kafka.offset_out_of_range to 'earliest' (learn what the "
            "topic holds now, from its start) or 'latest' (only new messages) and restart."
        )


def ensure_topics(cfg: KafkaConfig, bootstrap_servers: str) -> None:
    """Create the examples and dead-letter topics if missing (``kafka.create_topics``)."""
    opts = client_options(cfg, bootstrap_servers)
    for topic in (cfg.topic, cfg.dead_letter_topic):
        try:
            create_topic(bootstrap_servers, topic, client_options=opts)
        except KafkaError as exc:
            raise unreachable(cfg, bootstrap_servers, exc) from exc


def unreachable(cfg: KafkaConfig, bootstrap_servers: str, exc: Exception) -> SourceError:
    """kafka-python says only "Unable to bootstrap"; this says why where it can (a TLS failure)."""
    why = tls_handshake_error(cfg, bootstrap_servers)
    return SourceError(f"cannot reach Kafka at {bootstrap_servers} (kafka.bootstrap_servers): {why or exc}")


def offset_key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def owned_partitions(cfg: KafkaConfig, parts: set[int]) -> list[TopicPartition]:
    """The partitions of ``parts`` (the topic's) this learner owns: ``kafka.partitions`` or all."""
    if not parts:
        raise SourceError(f"topic {cfg.topic!r} has no partitions (does it exist?)")
    wanted = sorted(parts) if cfg.partitions is None else cfg.partitions
    missing = sorted(set(wanted) - parts)
    if missing:
        raise SourceError(f"topic {cfg.topic!r} has no partition(s) {missing}; it has {sorted(parts)}")
    return [TopicPartition(cfg.topic, p) for p in wanted]


def from_committed(key: str, committed: int) -> str:
    """Where a partition without a checkpointed offset starts when the group has a commit. The model
    that learned up to there is gone (no checkpoint): say so loudly."""
    log.warning(
        "%s: no checkpointed offset; resuming at the group's committed offset %d with "
        "a model that has not seen what came before",
        key,
        committed,
    )
    return f"committed offset {committed}"


def check_high_watermarks(
    positions: Mapping[TopicPartition, int], highwater: Callable[[TopicPartition], int | None]
) -> None:
    """OffsetOutOfRange for a position above its partition's high watermark (None: not known yet)."""
    hws = {tp: highwater(tp) for tp in positions}
    beyond = {tp: pos for tp, pos in positions.items() if (hw := hws[tp]) is not None and pos > hw}
    if beyond:
        shown = {offset_key(tp): hws[tp] for tp in beyond}
        raise OffsetOutOfRange(
            beyond, f"beyond the end of the log (high watermark {shown}): recreated or truncated"
        )


def check_earliest(positions: Mapping[TopicPartition, int], first: Mapping[TopicPartition, int]) -> None:
    """OffsetOutOfRange for a position below the earliest offset still in its partition's log."""
    below = {tp: pos for tp, pos in positions.items() if pos < first.get(tp, 0)}
    if below:
        firsts = {offset_key(tp): first[tp] for tp in below}
        raise OffsetOutOfRange(below, f"before the earliest offset still in the log {firsts} (retention)")


def lag_behind(
    positions: Mapping[TopicPartition, int], highwater: Callable[[TopicPartition], int | None]
) -> dict[TopicPartition, int]:
    """high watermark − position per partition whose high watermark is known."""
    out = {}
    for tp, pos in positions.items():
        hw = highwater(tp)
        if hw is not None:
            out[tp] = max(0, hw - pos)
    return out


class Source(Protocol):
    """What the daemon uses of a source: :class:`KafkaSource` (kafka-python, the default) or
    ``streamlearn.ingest.source_librdkafka.LibrdkafkaSource`` (``kafka.client: librdkafka``).
    Records have ``.value`` (bytes) and ``.offset``; partitions are kafka-python ``TopicPartition``s."""

    partitions: list[TopicPartition]

    def assign(self, timeout_s: float = 30.0) -> list[TopicPartition]: ...
    def seek(self, checkpointed: Mapping[str, int], *, group_commit: bool = True) -> dict[str, str]: ...
    def position(self, tp: TopicPartition) -> int: ...
    def poll(self, timeout_ms: int) -> Iterable[tuple[TopicPartition, Any]]: ...
    def peek(self, n: int) -> list[tuple[TopicPartition, Any]]: ...
    def commit(self, offsets: Mapping[TopicPartition, int], timeout_ms: int = 5000) -> bool: ...
    def check_range(self, positions: Mapping[TopicPartition, int]) -> None: ...
    def check_beginning(self, positions: Mapping[TopicPartition, int]) -> None: ...
    def reset(self, tp: TopicPartition, policy: str) -> int: ...
    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]: ...
    def close(self) -> None: ...


class KafkaSource:
    def __init__(
        self, cfg: KafkaConfig, bootstrap_servers: str, *, max_poll_interval_ms: int = 600_000
    ) -> None:
        self.cfg = cfg
        try:
            self.consumer = KafkaConsumer(
                **client_options(cfg, bootstrap_servers),
                group_id=cfg.group_id,
                enable_auto_commit=False,
                # Never let the client reset a position by itself: that silently skips or re-learns
                # examples. A fresh start is seeked explicitly (seek()); an out-of-range position raises
                # and the daemon applies kafka.offset_out_of_range.
                auto_offset_reset="none",
                max_poll_records=cfg.max_poll_records,
                session_timeout_ms=cfg.session_timeout_ms,
                heartbeat_interval_ms=cfg.heartbeat_interval_ms,
                max_poll_interval_ms=max_poll_interval_ms,
            )
        except KafkaError as exc:
            raise unreachable(cfg, bootstrap_servers, exc) from exc
        self.partitions: list[TopicPartition] = []
        # Drained from kafka-python, not yet handed out (kafka.max_poll_records at a time).
        self._drained: deque[tuple[TopicPartition, Any]] = deque()
        # An out-of-range error of the pipelining poll, raised once what was drained is handed out
        self._deferred: OffsetOutOfRangeError | None = None

    def assign(self, timeout_s: float = 30.0) -> list[TopicPartition]:
        """Assign the configured partitions of the topic (all of them by default)."""
        deadline = time.monotonic() + timeout_s
        parts: set[int] | None = None
        while time.monotonic() < deadline:
            parts = self.consumer.partitions_for_topic(self.cfg.topic)
            if parts:
                break
            time.sleep(0.2)
        self.partitions = owned_partitions(self.cfg, parts or set())
        self._drained.clear()
        self._deferred = None
        self.consumer.assign(self.partitions)
        return self.partitions

    def seek(self, checkpointed: Mapping[str, int], *, group_commit: bool = True) -> dict[str, str]:
        """Start each partition at the checkpoint's offset, else the group's commit (unless
        ``group_commit`` is False: a fleet never reads it), else the reset policy."""
        self._drained.clear()
        self._deferred = None  # about the positions left behind
        origin = {}
        for tp in self.partitions:
            key = offset_key(tp)
            if key in checkpointed:
                self.consumer.seek(tp, int(checkpointed[key]))
                origin[key] = f"checkpoint offset {checkpointed[key]}"
                continue
            committed = self.consumer.committed(tp) if group_commit else None
            if committed is not None:
                self.consumer.seek(tp, committed)
                origin[key] = from_committed(key, committed)
            elif self.cfg.auto_offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
                origin[key] = "beginning (auto_offset_reset=earliest)"
            else:
                self.consumer.seek_to_end(tp)
                origin[key] = "end (auto_offset_reset=latest)"
        return origin

    def position(self, tp: TopicPartition) -> int:
        """The next offset this source reads from ``tp`` (after what it drained)."""
        return int(self.consumer.position(tp))

    def poll(self, timeout_ms: int) -> Iterable[tuple[TopicPartition, Any]]:
        """Up to ``kafka.max_poll_records`` records in offset order per partition, waiting up to
        ``timeout_ms`` for some when none is drained yet. Records not taken stay for the next poll
        (a seek or reset drops them)."""
        drained = self._drained
        if not drained:
            deferred, self._deferred = self._deferred, None
            try:
                if deferred is not None:  # the pipelining poll's error, after its records
                    raise deferred
                batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=DRAIN_RECORDS)
            except OffsetOutOfRangeError as exc:  # real Kafka: the fetch position left the log
                offsets = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
                raise OffsetOutOfRange(offsets, "the broker says this offset is out of range") from None
            if batches:
                # kafka-python pipelines the next fetch only from a poll that found records already
                # buffered; one that had to wait for them returns without sending it, and the next
                # poll would wait a whole round trip again (20-30 ms for 1000 examples: ~20 µs an
                # example). A second poll that waits for nothing sends it now, to arrive while the
                # daemon learns; what it may return comes after, in order. Its error, if any, is
                # raised once the records already returned are handed out (their positions moved).
                try:
                    more = self.consumer.poll(timeout_ms=0, max_records=DRAIN_RECORDS)
                except OffsetOutOfRangeError as exc:
                    self._deferred, more = exc, {}
                for tp, recs in more.items():
                    batches.setdefault(tp, []).extend(recs)
            for tp in sorted(batches, key=lambda t: t.partition):
                drained.extend((tp, rec) for rec in batches[tp])
        for _ in range(min(len(drained), self.cfg.max_poll_records)):
            yield drained.popleft()

    def peek(self, n: int) -> list[tuple[TopicPartition, Any]]:
        """The next ``n`` records the following polls hand out, as far as they are drained now
        (a seek or reset may still drop them)."""
        return list(itertools.islice(self._drained, n))

    def commit(self, offsets: Mapping[TopicPartition, int], timeout_ms: int = 5000) -> bool:
        """Commit synchronously; False (logged) if the broker refused or did not answer in time —
        the next checkpoint retries (the checkpoint file, not the commit, is what a restart trusts)."""
        try:
            self.consumer.commit(
                {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}, timeout_ms=timeout_ms
            )
            return True
        except KafkaError as exc:
            log.warning("offset commit failed (will retry at the next checkpoint): %s", exc)
            return False

    def check_range(self, positions: Mapping[TopicPartition, int]) -> None:
        """Raise OffsetOutOfRange if a position lies outside the partition's log.

        Real Kafka answers a fetch beyond the log with an error, but not every Kafka-protocol broker
        does (tansu returns no records), so the daemon also compares its positions with the log's
        bounds: below the earliest offset (retention deleted unlearned records) or above the high
        watermark (the topic was recreated or truncated).
        """
        check_high_watermarks(positions, self.consumer.highwater)

    def check_beginning(self, positions: Mapping[TopicPartition, int]) -> None:
        """At start: a checkpointed position below the earliest offset: records deleted unlearned."""
        if not positions:
            return
        check_earliest(positions, self.consumer.beginning_offsets(list(positions)))

    def reset(self, tp: TopicPartition, policy: str) -> int:
        """Apply kafka.offset_out_of_range (earliest or latest) to one partition; returns the position."""
        kept = [(part, rec) for part, rec in self._drained if part != tp]  # read from the old log
        self._drained = deque(kept)
        if self._deferred is not None:  # an error still to raise is about the old position too
            was = self._deferred.args[0] if self._deferred.args else {}
            rest = {part: off for part, off in was.items() if part != tp} if isinstance(was, dict) else {}
            self._deferred = OffsetOutOfRangeError(rest) if rest else None
        hw = self.consumer.highwater(tp)
        if policy == "earliest":
            self.consumer.seek_to_beginning(tp)
        elif hw is not None:  # the high watermark, not ListOffsets(latest): tansu answers that wrongly
            self.consumer.seek(tp, hw)
        else:
            self.consumer.seek_to_end(tp)
        return int(self.consumer.position(tp))

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """highwater − position per partition (the broker's end_offsets can't be trusted on tansu)."""
        return lag_behind(positions, self.consumer.highwater)

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        except Exception as exc:  # closing is best effort; never mask the real exit reason
            log.debug("consumer close: %s", exc)

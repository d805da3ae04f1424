"""The librdkafka source (``kafka.client: librdkafka``): :class:`KafkaSource`'s contract on confluent-kafka.

kafka-python decodes records in Python on the learner's thread and its IO thread takes the GIL for
every 4 KB it reads: ~21 µs of the learner's thread a record (``benchmarks/kafka_client_cost.py``).
librdkafka fetches and parses in C threads without the GIL (~8 µs). Everything else is kept: explicit
assignment (no group rebalancing), the group used only to commit, positions set only by this code
(``auto.offset.reset: error``: an out-of-range position raises :class:`OffsetOutOfRange`), records
drained into a deque and handed out ``kafka.max_poll_records`` at a time so the parse-ahead can
``peek``, and partitions named by kafka-python's ``TopicPartition`` (dict keys, checkpoints).

confluent-kafka is imported only when this source is built: the default path never loads it.

tansu answers a fetch beyond the log with no records rather than an error, and its ListOffsets(latest)
is wrong, so :meth:`check_range` and :meth:`lag` use the high watermark of the last fetch
(``get_watermark_offsets(cached=True)``), unknown until a fetch came back, as KafkaSource uses
kafka-python's ``highwater``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import TopicPartition

from streamlearn.config import KafkaConfig
from streamlearn.config.kafka_security import check_security
from streamlearn.ingest.source import (
    KafkaSource,
    OffsetOutOfRange,
    Source,
    check_earliest,
    check_high_watermarks,
    from_committed,
    lag_behind,
    offset_key,
    owned_partitions,
)
from streamlearn.ingest.source import unreachable as _unreachable

log = logging.getLogger(__name__)

#: messages taken from librdkafka's queue per drain: its fetcher threads keep it filled meanwhile.
DRAIN_RECORDS = 1000
#: seconds to wait for the broker's answer to a metadata, offsets or watermark request.
REQUEST_TIMEOUT_S = 10.0

_SECURITY = {
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
}


def make_source(cfg: KafkaConfig, bootstrap_servers: str) -> Source:
    """The source ``kafka.client`` names."""
    if cfg.client == "librdkafka":
        return LibrdkafkaSource(cfg, bootstrap_servers)
    return KafkaSource(cfg, bootstrap_servers)


def _confluent() -> Any:
    import confluent_kafka

    return confluent_kafka


def consumer_config(cfg: KafkaConfig, bootstrap_servers: str, max_poll_interval_ms: int) -> dict[str, Any]:
    """librdkafka settings from the config; the security keys after ``check_security``."""
    check_security(cfg)
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": "streamlearn",
        "group.id": cfg.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Never let the client move a position by itself (skipped or re-learned examples).
        "auto.offset.reset": "error",
        "enable.partition.eof": False,
        "session.timeout.ms": cfg.session_timeout_ms,
        "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
        "max.poll.interval.ms": max_poll_interval_ms,
        "reconnect.backoff.max.ms": 2000,  # as kafka_options: quick recovery after a broker restart
        "security.protocol": cfg.security_protocol,
        "error_cb": ErrorLog(),
        "logger": _DebugLog(),  # its errors come to error_cb too: logged there, once
    }
    for key, name in _SECURITY.items():
        value = getattr(cfg, key)
        if value is not None:
            conf[name] = value
    return conf


class ErrorLog:
    """librdkafka's client errors (a refused connection, all brokers down), logged as warnings but
    each kind at most once per ``every_s``: it retries every few hundred ms while a broker is down,
    and the daemon's health probe says so already (``streamlearn_broker_up``)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last: dict[int, float] = {}
        self._quiet: dict[int, int] = {}

    def __call__(self, err: Any) -> None:
        code, now = err.code(), time.monotonic()
        if now - self._last.get(code, -self.every_s) < self.every_s:
            self._quiet[code] = self._quiet.get(code, 0) + 1
            return
        self._last[code] = now
        quiet = self._quiet.pop(code, 0)
        log.warning("librdkafka: %s%s", err.str(), f" ({quiet} more like it not logged)" if quiet else "")


class _DebugLog:
    """librdkafka's own log lines, at debug level (``logger`` takes anything with ``log``)."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        log.debug(msg, *args)


class Record:
    """A record as the daemon reads it: ``value`` (bytes) and ``offset``."""

    __slots__ = ("offset", "value")

    def __init__(self, offset: int, value: bytes | None) -> None:
        self.offset = offset
        self.value = value

    def __repr__(self) -> str:
        return f"Record(offset={self.offset}, {len(self.value or b'')} bytes)"


class LibrdkafkaSource:
    def __init__(
        self, cfg: KafkaConfig, bootstrap_servers: str, *, max_poll_interval_ms: int = 600_000
    ) -> None:
        self.cfg, self.bootstrap = cfg, bootstrap_servers
        self._ck = ck = _confluent()
        self.consumer = ck.Consumer(consumer_config(cfg, bootstrap_servers, max_poll_interval_ms))
        self.partitions: list[TopicPartition] = []
        self._tps: dict[int, TopicPartition] = {}  # partition number -> its kafka-python key
        # The next offset per partition after what was drained (librdkafka knows it only after a fetch).
        self._next: dict[TopicPartition, int] = {}
        self._drained: deque[tuple[TopicPartition, Record]] = deque()
        # An out-of-range error met while draining, raised once what was drained is handed out
        self._deferred: dict[TopicPartition, int] = {}

    def _ctp(self, tp: TopicPartition, offset: int | None = None) -> Any:
        if offset is None:
            return self._ck.TopicPartition(tp.topic, tp.partition)
        return self._ck.TopicPartition(tp.topic, tp.partition, offset)

    def _watermarks(self, tp: TopicPartition, *, cached: bool) -> tuple[int, int] | None:
        """(low, high) offsets; cached: the last fetch's (None before one), else the broker's."""
        try:
            lo, hi = self.consumer.get_watermark_offsets(
                self._ctp(tp), timeout=REQUEST_TIMEOUT_S, cached=cached
            )
        except self._ck.KafkaException as exc:
            raise _unreachable(self.cfg, self.bootstrap, exc) from exc
        return None if hi < 0 else (int(lo), int(hi))

    def _high_watermark(self, tp: TopicPartition) -> int | None:
        """The last fetch's high watermark (None before one came back)."""
        marks = self._watermarks(tp, cached=True)
        return None if marks is None else marks[1]

    def assign(self, timeout_s: float = 30.0) -> list[TopicPartition]:
        """Take the configured partitions of the topic (all of them by default); :meth:`seek` then
        assigns them to librdkafka with their start offsets."""
        deadline = time.monotonic() + timeout_s
        parts: set[int] = set()
        while not parts and time.monotonic() < deadline:
            try:
                meta = self.consumer.list_topics(
                    self.cfg.topic, timeout=max(0.1, deadline - time.monotonic())
                )
            except self._ck.KafkaException as exc:
                raise _unreachable(self.cfg, self.bootstrap, exc) from exc
            found = meta.topics.get(self.cfg.topic)
            parts = set(found.partitions) if found is not None and found.error is None else set()
            if not parts:
                time.sleep(0.2)
        self.partitions = owned_partitions(self.cfg, parts)
        self._tps = {tp.partition: tp for tp in self.partitions}
        self._drained.clear()
        self._deferred = {}
        return self.partitions

    def seek(self, checkpointed: Mapping[str, int], *, group_commit: bool = True) -> dict[str, str]:
        """Start each partition at the checkpoint's offset, else the group's commit (unless
        ``group_commit`` is False), else the reset policy; every start is an explicit offset."""
        self._drained.clear()
        self._deferred = {}
        todo = [tp for tp in self.partitions if offset_key(tp) not in checkpointed]
        committed: dict[TopicPartition, int] = {}
        if group_commit and todo:
            try:
                got = self.consumer.committed([self._ctp(tp) for tp in todo], timeout=REQUEST_TIMEOUT_S)
            except self._ck.KafkaException as exc:
                raise _unreachable(self.cfg, self.bootstrap, exc) from exc
            committed = {self._tps[c.partition]: int(c.offset) for c in got if c.offset >= 0}
        origin = {}
        for tp in self.partitions:
            key = offset_key(tp)
            if key in checkpointed:
                start, origin[key] = int(checkpointed[key]), f"checkpoint offset {checkpointed[key]}"
            elif tp in committed:
                start = committed[tp]
                origin[key] = from_committed(key, start)
            else:
                # the broker's answer, as kafka-python's seek_to_beginning/seek_to_end
                marks = self._watermarks(tp, cached=False) or (0, 0)
                if self.cfg.auto_offset_reset == "earliest":
                    start, origin[key] = marks[0], "beginning (auto_offset_reset=earliest)"
                else:
                    start, origin[key] = marks[1], "end (auto_offset_reset=latest)"
            self._next[tp] = start
        self.consumer.assign([self._ctp(tp, self._next[tp]) for tp in self.partitions])
        return origin

    def position(self, tp: TopicPartition) -> int:
        """The next offset this source reads from ``tp`` (after what it drained)."""
        return self._next[tp]

    def poll(self, timeout_ms: int) -> Iterable[tuple[TopicPartition, Any]]:
        """Up to ``kafka.max_poll_records`` records in offset order per partition, waiting up to
        ``timeout_ms`` for some when none is drained yet. Records not taken stay for the next poll
        (a seek or reset drops them)."""
        drained = self._drained
        if not drained:
            if self._deferred:
                deferred, self._deferred = self._deferred, {}
                raise OffsetOutOfRange(deferred, "the broker says this offset is out of range")
            self._drain(timeout_ms)
        for _ in range(min(len(drained), self.cfg.max_poll_records)):
            yield drained.popleft()

    def _drain(self, timeout_ms: int) -> None:
        self._take(timeout_ms)
        if self._deferred and not self._drained:
            deferred, self._deferred = self._deferred, {}
            raise OffsetOutOfRange(deferred, "the broker says this offset is out of range")

    def _take(self, timeout_ms: int) -> None:
        """Append what librdkafka has queued to the drained records; an out-of-range error is kept
        in ``_deferred`` (raised by a poll once the records before it are handed out)."""
        # consume() waits until it has all num_messages or the timeout passed: take what is queued
        # now, and wait only for a first message when nothing is.
        consumer = self.consumer
        msgs = consumer.consume(DRAIN_RECORDS, 0)
        if not msgs:
            if timeout_ms <= 0:
                return
            first = consumer.poll(timeout_ms / 1000)
            if first is None:
                return
            msgs = [first, *consumer.consume(DRAIN_RECORDS - 1, 0)]
        append, tps, nxt = self._drained.append, self._tps, self._next
        for m in msgs:
            if m.error() is not None:
                self._on_error(m)
                continue
            tp = tps[m.partition()]
            off = m.offset()
            append((tp, Record(off, m.value())))
            nxt[tp] = off + 1

    def _on_error(self, m: Any) -> None:
        err, codes = m.error(), self._ck.KafkaError
        code = err.code()
        if code == codes._PARTITION_EOF:
            return
        tp = self._tps.get(m.partition()) if m.topic() == self.cfg.topic else None
        if tp is not None and code in (codes._AUTO_OFFSET_RESET, codes.OFFSET_OUT_OF_RANGE):
            self._deferred[tp] = self._next[tp]
            return
        log.warning("librdkafka consumer: %s", err)

    def peek(self, n: int) -> list[tuple[TopicPartition, Any]]:
        """The next ``n`` records the following polls hand out, as far as they are drained now
        (a seek or reset may still drop them). Fewer than ``n`` drained: takes what librdkafka has
        queued first, without waiting, so the parse-ahead worker sees the next poll's records
        rather than none when a drain runs out."""
        if len(self._drained) < n and not self._deferred:
            self._take(0)
        return list(itertools.islice(self._drained, n))

    def commit(self, offsets: Mapping[TopicPartition, int], timeout_ms: int = 5000) -> bool:
        """Commit synchronously; False (logged) if the broker refused — the next checkpoint retries.
        librdkafka's synchronous commit has no timeout of its own: its requests time out after
        ``socket.timeout.ms`` (the daemon commits only while the broker answers its health probe)."""
        del timeout_ms
        try:
            done = self.consumer.commit(
                offsets=[self._ctp(tp, int(off)) for tp, off in offsets.items()], asynchronous=False
            )
        except self._ck.KafkaException as exc:
            log.warning("offset commit failed (will retry at the next checkpoint): %s", exc)
            return False
        failed = [f"{c.topic}:{c.partition}: {c.error}" for c in done or [] if c.error is not None]
        if failed:
            log.warning("offset commit failed (will retry at the next checkpoint): %s", "; ".join(failed))
            return False
        return True

    def check_range(self, positions: Mapping[TopicPartition, int]) -> None:
        """Raise OffsetOutOfRange if a position lies above the high watermark of the last fetch
        (tansu answers a fetch beyond the log with no records; KafkaSource.check_range says more)."""
        check_high_watermarks(positions, self._high_watermark)

    def check_beginning(self, positions: Mapping[TopicPartition, int]) -> None:
        """At start: a checkpointed position below the earliest offset: records deleted unlearned."""
        first = {tp: (self._watermarks(tp, cached=False) or (0, 0))[0] for tp in positions}
        check_earliest(positions, first)

    def reset(self, tp: TopicPartition, policy: str) -> int:
        """Apply kafka.offset_out_of_range (earliest or latest) to one partition; returns the position."""
        self._drained = deque((part, rec) for part, rec in self._drained if part != tp)
        self._deferred.pop(tp, None)
        hw = self._high_watermark(tp)
        if policy == "earliest":
            self._next[tp] = (self._watermarks(tp, cached=False) or (0, 0))[0]
        elif hw is not None:  # the high watermark, not ListOffsets(latest): tansu answers that wrongly
            self._next[tp] = hw
        else:
            self._next[tp] = (self._watermarks(tp, cached=False) or (0, 0))[1]
        # A new assignment, not seek(): a partition that failed with out-of-range may be stopped.
        # The others restart after what was drained of them, which stays to be handed out.
        self.consumer.assign([self._ctp(part, self._next[part]) for part in self.partitions])
        return self._next[tp]

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """high watermark − position per partition, from the last fetch (tansu's ListOffsets can't be
        trusted)."""
        return lag_behind(positions, self._high_watermark)

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception as exc:  # closing is best effort; never mask the real exit reason
            log.debug("consumer close: %s", exc)

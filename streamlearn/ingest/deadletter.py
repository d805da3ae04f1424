"""The dead-letter sink: every rejected message, unchanged, with why and where it came from.

The value is the original bytes (so a producer team can replay a fixed message as-is); the
reason and source coordinates travel as record headers and as the key
(``topic:partition:offset``), so the topic is greppable with any Kafka tool.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, NamedTuple

from kafka import KafkaProducer
from kafka.errors import KafkaError

from streamlearn.config import KafkaConfig
from streamlearn.ingest.kafka_options import client_options

log = logging.getLogger(__name__)

#: Largest value a dead letter carries. A bigger message (rejected as ``oversized``) would exceed
#: the producer's request limit and the broker's message.max.bytes (1 MiB by default): its send
#: would fail on every try and block every later checkpoint. Such a letter carries the first
#: MAX_VALUE_BYTES and a ``streamlearn.truncated_from`` header; the full message stays in the
#: source topic at the offset the headers give.
MAX_VALUE_BYTES = 256 * 1024


class DeadLetterError(KafkaError):
    """Some dead letters were not acknowledged; they are queued again."""


class _Letter(NamedTuple):
    value: bytes | None
    key: bytes
    headers: list[tuple[str, bytes]]


class DeadLetterSink:
    def __init__(self, cfg: KafkaConfig, bootstrap_servers: str) -> None:
        self.topic = cfg.dead_letter_topic
        # Not idempotent: kafka-python's idempotent producer stays broken after a broker restart
        # (UnknownProducerIdError). Duplicates in a dead-letter topic are harmless; losses are not.
        self.producer = KafkaProducer(
            **client_options(cfg, bootstrap_servers),
            acks="all",
            linger_ms=5,
            enable_idempotence=False,
            retries=5,
        )
        self._futures: list[tuple[Any, _Letter]] = []

    @property
    def pending(self) -> int:
        return len(self._futures)

    def send(
        self, value: bytes | None, *, reason: str, detail: str, topic: str, partition: int, offset: int
    ) -> None:
        headers = [
            ("streamlearn.reason", reason.encode()),
            ("streamlearn.detail", detail.encode("utf-8", "replace")[:1000]),
            ("streamlearn.source.topic", topic.encode()),
            ("streamlearn.source.partition", str(partition).encode()),
            ("streamlearn.source.offset", str(offset).encode()),
        ]
        if value is not None and len(value) > MAX_VALUE_BYTES:
            headers.append(("streamlearn.truncated_from", str(len(value)).encode()))
            value = value[:MAX_VALUE_BYTES]
        key = f"{topic}:{partition}:{offset}".encode()
        self._send(_Letter(value, key, headers))

    def _send(self, letter: _Letter) -> None:
        try:
            fut = self.producer.send(self.topic, value=letter.value, key=letter.key, headers=letter.headers)
        except KafkaError as exc:  # e.g. no metadata within max_block_ms while the broker is away
            log.warning("dead letter %s not sent yet (%s); it is retried at the next flush", letter.key, exc)
            fut = None
        self._futures.append((fut, letter))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every dead letter is acknowledged; raises KafkaError if any was not.

        ``KafkaProducer.flush`` returns even when sends failed — the failure is in each future —
        so every future is checked before the caller may move its committed offset past them.
        A letter still in flight (the broker is slow or away) stays pending; one that failed for
        good (retries or delivery timeout exhausted) is sent again and stays pending. Either way a
        later flush can still succeed: nothing is dropped, and no letter is sent twice while its
        first send may still land.
        """
        if not self._futures:
            return
        with contextlib.suppress(KafkaError):  # a timeout leaves futures undone: handled below
            self.producer.flush(timeout=timeout_s)
        pending: list[tuple[Any, _Letter]] = []
        failed: list[_Letter] = []
        error: Exception | None = None
        for fut, letter in self._futures:
            if fut is None:  # send() itself raised
                failed.append(letter)
            elif not fut.is_done:
                pending.append((fut, letter))
            elif fut.failed():
                failed.append(letter)
                error = error or fut.exception
        self._futures = pending
        for letter in failed:
            self._send(letter)
        if self._futures:
            raise DeadLetterError(
                f"{len(self._futures)} dead letter(s) not acknowledged"
                + (f"; {len(failed)} failed ({error}) and were sent again" if failed else "")
            )

    def close(self) -> None:
        try:
            self.producer.close(timeout=5)
        except Exception as exc:
            log.debug("dead-letter producer close: %s", exc)

"""The dead-letter sink: every rejected message, unchanged, with why and where it came from.

The value is the original bytes (so a producer team can replay a fixed message as-is); the
reason and source coordinates travel as record headers and as the key
(``topic:partition:offset``), so the topic is greppable with any Kafka tool.
"""

from __future__ import annotations

import logging

from kafka import KafkaProducer

from streamlearn.config import KafkaConfig
from streamlearn.ingest.kafka_options import client_options

log = logging.getLogger(__name__)


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
        self._futures: list = []

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
        key = f"{topic}:{partition}:{offset}".encode()
        self._futures.append(self.producer.send(self.topic, value=value, key=key, headers=headers))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every dead letter is acknowledged; raises KafkaError if any was not.

        ``KafkaProducer.flush`` returns even when sends failed — the failure is in each future —
        so every future is checked before the caller may move its committed offset past them.
        """
        if self._futures:
            self.producer.flush(timeout=timeout_s)
            for fut in self._futures:
                fut.get(timeout=timeout_s)
            self._futures.clear()

    def close(self) -> None:
        try:
            self.producer.close(timeout=5)
        except Exception as exc:
            log.debug("dead-letter producer close: %s", exc)

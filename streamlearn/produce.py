"""Send labelled examples to a topic: a built-in stream or a JSONL/CSV file, optionally rate-limited.

This is also the reference producer for teams wiring their own: one JSON object per message,
``{"x": [...], "y": 3, "task": 0, "id": "..."}`` (schema: ``streamlearn/schemas/example.schema.json``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from kafka import KafkaProducer

from streamlearn.config import KafkaConfig
from streamlearn.ingest.kafka_options import client_options


def encode(message: dict[str, Any] | bytes) -> bytes:
    if isinstance(message, bytes):
        return message
    return json.dumps(message, separators=(",", ":")).encode()


def stream_messages(name: str, n_tasks: int | None = None) -> Iterator[dict[str, Any]]:
    from streamlearn.streams import examples_from_task_stream, load_stream

    return examples_from_task_stream(load_stream(name, n_tasks=n_tasks))


def make_producer(bootstrap_servers: str, cfg: KafkaConfig | None = None) -> KafkaProducer:
    # Not idempotent: kafka-python's idempotent producer stays broken after a broker restart.
    return KafkaProducer(
        **client_options(cfg or KafkaConfig(), bootstrap_servers),
        acks="all",
        linger_ms=10,
        batch_size=512 * 1024,
        enable_idempotence=False,
        retries=5,
        max_request_size=4 * 1024 * 1024,
    )


def produce(
    messages: Iterable[dict[str, Any] | bytes],
    bootstrap_servers: str,
    topic: str,
    *,
    rate: float | None = None,
    limit: int | None = None,
    total: int | None = None,
    progress: TextIO | None = sys.stderr,
    cfg: KafkaConfig | None = None,
) -> int:
    """Send ``messages`` in order (one partition key: order is the stream's order); returns the count."""
    producer = make_producer(bootstrap_servers, cfg)
    start = last = time.monotonic()
    sent = 0
    try:
        for msg in messages:
            if limit is not None and sent >= limit:
                break
            if rate:
                # pace against the start time, so a slow send is caught up rather than compounded
                wait = start + sent / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            producer.send(topic, value=encode(msg))
            sent += 1
            now = time.monotonic()
            if progress is not None and now - last >= 0.5:
                last = now
                of = (
                    f"/{min(total, limit) if total and limit else (total or limit)}"
                    if (total or limit)
                    else ""
                )
                progress.write(f"\rproduced {sent}{of} ({sent / (now - start):.0f} msg/s)")
                progress.flush()
        producer.flush()
    finally:
        producer.close(timeout=10)
    if progress is not None:
        el = time.monotonic() - start
        progress.write(
            f"\rproduced {sent} messages to {topic} in {el:.1f} s ({sent / max(el, 1e-9):.0f} msg/s)\n"
        )
        progress.flush()
    return sent


def topic_messages(
    bootstrap_servers: str, topic: str, cfg: KafkaConfig | None = None, *, timeout_s: float = 30.0
) -> Iterator[tuple[bytes, list[tuple[str, bytes]]]]:
    """Every message of ``topic`` from its beginning to its end as of now: (value, headers).

    Read without a consumer group (nothing committed), so reading it twice reads it all twice."""
    from kafka import KafkaConsumer, TopicPartition

    from streamlearn.ingest.kafka_options import client_options

    consumer = KafkaConsumer(
        **client_options(cfg or KafkaConfig(), bootstrap_servers), enable_auto_commit=False, group_id=None
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        # The end is each partition's high watermark at its first fetch (tansu answers ListOffsets
        # "latest" wrongly, see ingest/source.py); what arrives after that is not read.
        end: dict[TopicPartition, int] = {}
        left = set(tps)
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout_s:.0f} s")
            batches = consumer.poll(timeout_ms=500)
            for tp in tps:
                hw = consumer.highwater(tp)
                if tp not in end and hw is not None:
                    end[tp] = hw
            for tp, records in batches.items():
                for rec in records:
                    if rec.offset < end.get(tp, rec.offset + 1) and rec.value is not None:
                        yield rec.value, [(k, v) for k, v in (rec.headers or [])]
            left = {tp for tp in left if tp not in end or consumer.position(tp) < end[tp]}
    finally:
        consumer.close()

"""Topic administration on any Kafka-protocol broker: create topics, ask whether a broker answers.

Short-lived kafka-python admin clients, with the caller's security settings (``client_options``,
e.g. ``kafka_options.client_options(cfg.kafka, bootstrap)``) and our own address, client id and
timeouts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

logger = logging.getLogger("streamlearn.ingest.topics")


def admin_options(
    client_options: Mapping[str, Any] | None, bootstrap_servers: str, client_id: str, timeout_ms: int
) -> dict[str, Any]:
    """The caller's security settings (e.g. ``client_options(cfg.kafka, ...)``) for a short-lived
    admin client, with this address, client id and timeouts."""
    return {
        **(client_options or {}),
        "bootstrap_servers": bootstrap_servers,
        "client_id": client_id,
        "request_timeout_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,
    }


def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    *,
    exist_ok: bool = True,
    timeout_s: float = 10.0,
    client_options: Mapping[str, Any] | None = None,
) -> None:
    """Create `name` explicitly.

    tansu does auto-create topics on produce, but with 4 partitions, which breaks the single-partition
    ordering the stream relies on, so every topic we use is created here first. ``client_options`` are
    kafka-python settings for the admin client (``security_protocol``, ``ssl_*``, ``sasl_*``; e.g.
    ``kafka_options.client_options(cfg.kafka, bootstrap)``); address, client id and timeouts are ours.
    """
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        **admin_options(client_options, bootstrap_servers, "streamlearn-admin", timeout_ms)
    )
    try:
        admin.create_topics([NewTopic(name, partitions, 1)], timeout_ms=timeout_ms)
        logger.info("created topic %s (%d partition(s)) on %s", name, partitions, bootstrap_servers)
    except TopicAlreadyExistsError:
        if not exist_ok:
            raise
        logger.debug("topic %s already exists on %s", name, bootstrap_servers)
    finally:
        admin.close()


def kafka_is_ready(
    bootstrap_servers: str, timeout_s: float = 2.0, client_options: Mapping[str, Any] | None = None
) -> bool:
    """True once the broker answers a Kafka metadata request (an open TCP port alone is not enough).

    ``client_options``: kafka-python security settings, as for :func:`create_topic`.
    """
    timeout_ms = max(100, int(timeout_s * 1000))
    try:
        admin = KafkaAdminClient(
            **admin_options(client_options, bootstrap_servers, "streamlearn-probe", timeout_ms)
        )
    except KafkaError:
        return False
    try:
        admin.describe_cluster()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()

"""Shared fixtures: one embedded Kafka-protocol broker (tansu) per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from streamlearn.ingest.broker import EmbeddedBroker, create_topic


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A running tansu broker; use `.bootstrap_servers`. Shared, so tests must use their own topics/groups."""
    # Log under pytest's temp root, which pytest prunes, rather than a fresh /tmp dir per session.
    with EmbeddedBroker(log_dir=tmp_path_factory.mktemp("tansu")) as started:
        yield started


@pytest.fixture
def topic(broker: EmbeddedBroker) -> str:
    """A fresh single-partition topic on the session broker (created explicitly: auto-created ones get 4)."""
    name = f"test-{uuid.uuid4().hex}"
    create_topic(broker.bootstrap_servers, name, partitions=1, exist_ok=False)
    return name


@pytest.fixture
def unique_group() -> str:
    """A consumer-group id no other test uses, so committed offsets never leak between tests."""
    return f"group-{uuid.uuid4().hex}"

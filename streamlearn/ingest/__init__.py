"""Kafka ingestion: the embedded broker for demo/tests (`broker`)."""

from streamlearn.ingest.broker import BrokerError, EmbeddedBroker, TansuNotFoundError, create_topic

__all__ = ["BrokerError", "EmbeddedBroker", "TansuNotFoundError", "create_topic"]

"""kafka-python client options from the config: security settings pass straight through."""

from __future__ import annotations

from typing import Any

from streamlearn.config import KafkaConfig


def client_options(cfg: KafkaConfig, bootstrap_servers: str) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers.split(","),
        "security_protocol": cfg.security_protocol,
        "client_id": "streamlearn",
        # kafka-python backs off up to 30 s between reconnects; after a broker restart that is up to
        # 30 s of not learning for nothing. 2 s keeps the retry load negligible and recovery quick.
        "reconnect_backoff_max_ms": 2000,
    }
    for key in (
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
    ):
        value = getattr(cfg, key)
        if value is not None:
            opts[key] = value
    return opts

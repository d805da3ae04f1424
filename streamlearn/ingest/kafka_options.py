"""kafka-python client options from the config: security settings pass straight through.

Every client (consumer, dead-letter producer, health probe, ``streamlearn produce``) is built from
:func:`client_options`, so ``kafka.security_protocol``, ``kafka.ssl_*`` and ``kafka.sasl_*`` apply to
all of them alike, after :func:`~streamlearn.config.kafka_security.check_security` (TLS files that
cannot be read, ``ssl_*``/``sasl_*`` settings the protocol would ignore): the config checks the same
when it loads, and lives there so that the config never imports ``ingest``.

A broker whose certificate the CA does not vouch for (or whose name or IP address the certificate does
not list) is only found by connecting: :func:`tls_handshake_error` names the reason, for the error
message when bootstrapping fails.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from streamlearn.config.kafka_security import (
    SASL_KEYS,
    SSL_KEYS,
    check_security,
    tls_client_context,
    uses_sasl,
    uses_tls,
)
from streamlearn.config.schema import KafkaConfig


def client_options(cfg: KafkaConfig, bootstrap_servers: str) -> dict[str, Any]:
    check_security(cfg)
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers.split(","),
        "security_protocol": cfg.security_protocol,
        "client_id": "streamlearn",
        # kafka-python backs off up to 30 s between reconnects; after a broker restart that is up to
        # 30 s of not learning for nothing. 2 s keeps the retry load negligible and recovery quick.
        "reconnect_backoff_max_ms": 2000,
    }
    for key in (*SASL_KEYS, *SSL_KEYS):
        value = getattr(cfg, key)
        if value is not None:
            opts[key] = value
    return opts


def tls_handshake_error(cfg: KafkaConfig, bootstrap_servers: str, timeout_s: float = 5.0) -> str | None:
    """Why a TLS handshake with the bootstrap servers fails, or None (not TLS, or one succeeds).

    For error messages after kafka-python gave up bootstrapping: it says only "Unable to bootstrap",
    while this says e.g. "certificate verify failed: unable to get local issuer certificate".
    """
    if not uses_tls(cfg):
        return None
    ctx = tls_client_context(cfg)
    reasons = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]")
        try:
            with (
                socket.create_connection((host, int(port)), timeout=timeout_s) as sock,
                ctx.wrap_socket(sock, server_hostname=host),
            ):
                return None
        except ssl.SSLCertVerificationError as exc:
            reasons.append(
                f"{server}: {exc.verify_message or exc} (kafka.ssl_cafile: {cfg.ssl_cafile or 'system CAs'})"
            )
        except (OSError, ValueError) as exc:
            reasons.append(f"{server}: {exc}")
    return "TLS handshake failed with " + "; ".join(reasons)


__all__ = [
    "check_security",
    "client_options",
    "tls_client_context",
    "tls_handshake_error",
    "uses_sasl",
    "uses_tls",
]

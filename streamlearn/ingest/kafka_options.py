"""kafka-python client options from the config: security settings pass straight through.

Every client (consumer, dead-letter producer, health probe, ``streamlearn produce``) is built from
:func:`client_options`, so ``kafka.security_protocol``, ``kafka.ssl_*`` and ``kafka.sasl_*`` apply to
all of them alike. Two checks happen here, before any connection, because kafka-python reports both
only as "Unable to bootstrap" after its 30 s bootstrap timeout (the cause is in its logs, not the error):

* TLS files that are missing or unparsable are a :class:`ConfigError` naming the key (kafka-python
  would load them again for every connection attempt, fail each time, and time out).
* ``ssl_*`` or ``sasl_*`` settings under a protocol that ignores them (``ssl_cafile`` with
  ``PLAINTEXT``, ``sasl_mechanism`` with ``SSL``) are a :class:`ConfigError`: kafka-python drops them
  silently, which would connect without the TLS or authentication the operator asked for.

A broker whose certificate the CA does not vouch for (or whose name or IP address the certificate does
not list) is only found by connecting: :func:`tls_handshake_error` names the reason, for the error
message when bootstrapping fails.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from streamlearn.config import KafkaConfig
from streamlearn.errors import ConfigError

_SSL_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
_SASL_KEYS = ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password")


def uses_tls(cfg: KafkaConfig) -> bool:
    return cfg.security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(cfg: KafkaConfig) -> bool:
    return cfg.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


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
    for key in (*_SASL_KEYS, *_SSL_KEYS):
        value = getattr(cfg, key)
        if value is not None:
            opts[key] = value
    return opts


def check_security(cfg: KafkaConfig, source: str | None = None) -> None:
    """Raise :class:`ConfigError` for security settings kafka-python would ignore or fail on later.

    Run when a config file is loaded (``source`` names it) and again for every client built from a
    ``KafkaConfig`` made in code.
    """
    protocol = cfg.security_protocol
    unused = (
        (uses_tls(cfg), _SSL_KEYS, "TLS", "SSL or SASL_SSL"),
        (uses_sasl(cfg), _SASL_KEYS, "SASL", "SASL_PLAINTEXT or SASL_SSL"),
    )
    for used, keys, what, protocols in unused:
        for key in keys if not used else ():
            if getattr(cfg, key) is not None:
                raise ConfigError(
                    f"expected null under security_protocol {protocol}, which does not use {what} "
                    f"(it would be ignored); use {protocols}, or remove it",
                    source=source,
                    key=f"kafka.{key}",
                )
    if uses_tls(cfg):
        try:
            tls_client_context(cfg)
        except ConfigError as exc:
            if source is None:
                raise
            raise ConfigError(str(exc), source=source) from None


def tls_client_context(cfg: KafkaConfig) -> ssl.SSLContext:
    """The context kafka-python builds from these settings (same calls), with file errors named by key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    if cfg.ssl_cafile:
        try:
            ctx.load_verify_locations(cfg.ssl_cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"expected a readable PEM file of CA certificates, got {cfg.ssl_cafile!r}: {exc}",
                key="kafka.ssl_cafile",
            ) from exc
    else:
        ctx.load_default_certs()
    if cfg.ssl_certfile:
        try:
            ctx.load_cert_chain(certfile=cfg.ssl_certfile, keyfile=cfg.ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"expected a readable PEM client certificate (with kafka.ssl_keyfile {cfg.ssl_keyfile!r}), "
                f"got {cfg.ssl_certfile!r}: {exc}",
                key="kafka.ssl_certfile",
            ) from exc
    elif cfg.ssl_keyfile:
        raise ConfigError(
            "expected kafka.ssl_certfile too (a key needs its certificate)", key="kafka.ssl_keyfile"
        )
    return ctx


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

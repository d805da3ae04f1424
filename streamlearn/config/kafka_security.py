"""Kafka security settings that kafka-python would ignore or fail on, refused before connecting.

kafka-python reports both problems below only as "Unable to bootstrap" after its 30 s bootstrap
timeout (the cause is in its logs, not the error), so they are checked when the config loads (the
message names the file) and again for every client built from a ``KafkaConfig`` made in code
(``streamlearn.ingest.kafka_options``):

* TLS files that are missing or unparsable are a :class:`ConfigError` naming the key (kafka-python
  would load them again for every connection attempt, fail each time, and time out).
* ``ssl_*`` or ``sasl_*`` settings under a protocol that ignores them (``ssl_cafile`` with
  ``PLAINTEXT``, ``sasl_mechanism`` with ``SSL``) are a :class:`ConfigError`: kafka-python drops them
  silently, which would connect without the TLS or authentication the operator asked for.

>>> check_security(KafkaConfig(ssl_cafile="ca.pem"), source="c.yaml")
Traceback (most recent call last):
...
streamlearn.errors.ConfigError: c.yaml: kafka.ssl_cafile: expected null under security_protocol PLAINTEXT, \
which does not use TLS (it would be ignored); use SSL or SASL_SSL, or remove it
"""

from __future__ import annotations

import ssl

from streamlearn.config.schema import KafkaConfig
from streamlearn.errors import ConfigError

SSL_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
SASL_KEYS = ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password")


def uses_tls(cfg: KafkaConfig) -> bool:
    return cfg.security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(cfg: KafkaConfig) -> bool:
    return cfg.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def check_security(cfg: KafkaConfig, source: str | None = None) -> None:
    """Raise :class:`ConfigError` for security settings kafka-python would ignore or fail on later."""
    protocol = cfg.security_protocol
    unused = (
        (uses_tls(cfg), SSL_KEYS, "TLS", "SSL or SASL_SSL"),
        (uses_sasl(cfg), SASL_KEYS, "SASL", "SASL_PLAINTEXT or SASL_SSL"),
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

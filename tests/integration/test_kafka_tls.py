"""Kafka over TLS, end to end: the real daemon and producer against a TLS-only embedded broker.

The certificates are made here (a throwaway CA, a server certificate for 127.0.0.1 as an IP SAN) with
the ``cryptography`` package. tansu 0.6.0 cannot serve TLS itself, so ``EmbeddedBroker(tls=...)``
terminates it in-process in front of tansu (see ``streamlearn/ingest/broker.py``); the clients speak
TLS to the advertised port and nothing else is listening there.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kafka import KafkaConsumer, TopicPartition

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import KafkaConfig, load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.errors import ConfigError
from streamlearn.ingest.broker import BrokerError, EmbeddedBroker, create_topic
from streamlearn.ingest.kafka_options import client_options, tls_handshake_error
from streamlearn.ingest.source import SourceError
from streamlearn.produce import produce, stream_messages

pytestmark = pytest.mark.integration

N = 200
# kafka-python gives up bootstrapping after 30 s (bootstrap_timeout_ms); the daemon must fail by then.
FAIL_WITHIN_S = 60.0


# -- certificates -----------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, sans: list[x509.GeneralName]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("streamlearn test broker"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write_cert(path: Path, cert: x509.Certificate) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> str:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = _ca("streamlearn test CA")
    _, other_ca = _ca("some other CA")
    ip_key, ip_cert = _server_cert(ca_key, ca, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    dns_key, dns_cert = _server_cert(ca_key, ca, [x509.DNSName("kafka.example.com")])
    return {
        "ca": _write_cert(d / "ca.pem", ca),
        "other_ca": _write_cert(d / "other-ca.pem", other_ca),
        "cert": _write_cert(d / "server.pem", ip_cert),
        "key": _write_key(d / "server.key", ip_key),
        "dns_cert": _write_cert(d / "dns-server.pem", dns_cert),
        "dns_key": _write_key(d / "dns-server.key", dns_key),
    }


@pytest.fixture(scope="module")
def tls_broker(pki: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A TLS-only broker; its readiness probe verifies the certificate as the clients below do."""
    broker = EmbeddedBroker(
        tls=(pki["cert"], pki["key"]),
        client_options={"security_protocol": "SSL", "ssl_cafile": pki["ca"]},
        log_dir=tmp_path_factory.mktemp("tansu-tls"),
    )
    with broker:
        yield broker


def ssl_kafka(pki: dict[str, str], ca: str = "ca") -> dict[str, Any]:
    return {"security_protocol": "SSL", "ssl_cafile": pki[ca]}


def tls_topic(broker: EmbeddedBroker, pki: dict[str, str]) -> str:
    """A fresh single-partition topic plus its dead-letter topic, created over TLS."""
    topic = f"tls-{uuid.uuid4().hex[:12]}"
    for name in (topic, f"{topic}.dlq"):
        create_topic(broker.bootstrap_servers, name, exist_ok=False, client_options=ssl_kafka(pki))
    return topic


def daemon_config(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, kafka: dict[str, Any]
) -> dict[str, Any]:
    return {
        "kafka": {
            "bootstrap_servers": broker.bootstrap_servers,
            "topic": topic,
            "dead_letter_topic": f"{topic}.dlq",
            "group_id": f"g-{uuid.uuid4().hex[:8]}",
            "poll_timeout_ms": 100,
            "create_topics": True,  # over TLS too
            **kafka,
        },
        "learner": {"name": "er", "alignment_every": 0},
        "checkpoint": {"dir": str(tmp_path / "ckpt"), "every_examples": 500, "every_seconds": 30},
        "runtime": {"log_every_seconds": 1.0, "max_examples": N},
        "serve": {"enabled": False},
    }


def run_daemon(cfg: dict[str, Any], timeout_s: float) -> tuple[dict[str, Any], float, threading.Thread]:
    """Run the daemon in a thread; returns {"summary"|"error": ...}, the seconds it took, the thread."""
    daemon = Daemon(load_config_dict(cfg, "test"))
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["summary"] = daemon.run()
        except Exception as exc:
            out["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=timeout_s)
    if thread.is_alive():
        daemon.request_stop()
    return out, time.monotonic() - started, thread


# -- the daemon over TLS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_daemon_learns_and_commits_everything_over_tls(
    tls_broker: EmbeddedBroker, pki: dict[str, str], tmp_path: Path, client: str
) -> None:
    topic = tls_topic(tls_broker, pki)
    kafka = ssl_kafka(pki)
    sent = produce(
        stream_messages("rotated-mnist-10k", n_tasks=1),
        tls_broker.bootstrap_servers,
        topic,
        limit=N,
        progress=None,
        cfg=KafkaConfig(**kafka),
    )
    assert sent == N
    cfg = daemon_config(tls_broker, topic, tmp_path, {**kafka, "client": client})
    out, took_s, thread = run_daemon(cfg, timeout_s=240)
    assert not thread.is_alive(), "daemon did not stop"
    print(f"\n{N} examples learned over TLS ({client}) in {took_s:.1f}s")
    assert "error" not in out, out
    assert out["summary"]["learned"] == N and out["summary"]["rejected"] == 0

    consumer = KafkaConsumer(
        **client_options(KafkaConfig(**kafka), tls_broker.bootstrap_servers),
        group_id=cfg["kafka"]["group_id"],
        enable_auto_commit=False,
    )
    try:
        assert consumer.committed(TopicPartition(topic, 0)) == N
    finally:
        consumer.close()
    latest = CheckpointStore(cfg["checkpoint"]["dir"]).latest()
    assert latest is not None
    assert latest[1]["offsets"] == {f"{topic}:0": N}


def test_plaintext_or_untrusting_daemon_fails_in_bounded_time_and_learns_nothing(
    tls_broker: EmbeddedBroker, pki: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = tls_topic(tls_broker, pki)
    produce(
        stream_messages("rotated-mnist-10k", n_tasks=1),
        tls_broker.bootstrap_servers,
        topic,
        limit=20,
        progress=None,
        cfg=KafkaConfig(**ssl_kafka(pki)),
    )
    cases = {
        "plaintext": daemon_config(tls_broker, topic, tmp_path / "plaintext", {}),
        "wrong CA": daemon_config(tls_broker, topic, tmp_path / "wrong-ca", ssl_kafka(pki, "other_ca")),
    }
    results: dict[str, tuple[dict[str, Any], float, threading.Thread]] = {}
    caplog.set_level(logging.ERROR, logger="kafka")
    # Side by side: each fails once its first client gives up bootstrapping (10 s to 30 s).
    runners = [
        threading.Thread(target=lambda n=name, c=cfg: results.update({n: run_daemon(c, FAIL_WITHIN_S)}))
        for name, cfg in cases.items()
    ]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    for name, (out, took_s, thread) in results.items():
        print(f"\n{name}: failed after {took_s:.1f}s with {out.get('error')!r}")
        assert not thread.is_alive(), f"{name}: daemon still running after {FAIL_WITHIN_S}s"
        assert "summary" not in out, f"{name}: the daemon ran: {out}"
        assert isinstance(out["error"], SourceError), out
        assert "cannot reach Kafka at" in str(out["error"]), out
        assert CheckpointStore(cases[name]["checkpoint"]["dir"]).latest() is None, f"{name}: checkpointed"
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert "unable to get local issuer certificate" in str(results["wrong CA"][0]["error"]), results
    # What the daemon's error could say (helper for the bootstrap-failure message):
    reason = tls_handshake_error(KafkaConfig(**ssl_kafka(pki, "other_ca")), tls_broker.bootstrap_servers)
    assert reason is not None and "unable to get local issuer certificate" in reason, reason
    assert tls_handshake_error(KafkaConfig(**ssl_kafka(pki)), tls_broker.bootstrap_servers) is None


def test_hostname_is_checked_against_the_certificate(
    pki: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A certificate from the right CA but for another name is refused: no ssl_check_hostname=False."""
    with EmbeddedBroker(
        tls=(pki["dns_cert"], pki["dns_key"]), log_dir=tmp_path_factory.mktemp("tansu-dns")
    ) as broker:
        reason = tls_handshake_error(KafkaConfig(**ssl_kafka(pki)), broker.bootstrap_servers)
    assert reason is not None and "IP address mismatch" in reason, reason


# -- the TLS broker itself --------------------------------------------------------------------------------


def test_tls_broker_restarts_on_its_port_after_a_crash(
    pki: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    with EmbeddedBroker(
        tls=(pki["cert"], pki["key"]),
        client_options=ssl_kafka(pki),
        log_dir=tmp_path_factory.mktemp("tansu-restart"),
    ) as broker:
        port = broker.port
        broker.kill()
        assert tls_handshake_error(KafkaConfig(**ssl_kafka(pki)), f"127.0.0.1:{port}") is not None
        broker.start()
        assert broker.port == port
        create_topic(broker.bootstrap_servers, "after-restart", client_options=ssl_kafka(pki))
    assert tls_handshake_error(KafkaConfig(**ssl_kafka(pki)), f"127.0.0.1:{port}") is not None


def test_unusable_server_certificate_is_a_clear_broker_error(pki: dict[str, str], tmp_path: Path) -> None:
    broker = EmbeddedBroker(tls=(pki["cert"], str(tmp_path / "missing.key")))
    with pytest.raises(BrokerError, match="cannot load TLS certificate"):
        broker.start()
    assert not broker.is_running()


# -- configuration checks (before any connection) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "kafka.ssl_cafile"),
        ({"security_protocol": "SSL", "ssl_certfile": "/nonexistent/c.pem"}, "kafka.ssl_certfile"),
        ({"security_protocol": "SSL", "ssl_keyfile": "/nonexistent/c.key"}, "kafka.ssl_keyfile"),
        ({"ssl_cafile": "ca.pem"}, "kafka.ssl_cafile"),  # PLAINTEXT would ignore it
        ({"security_protocol": "SSL", "sasl_mechanism": "PLAIN"}, "kafka.sasl_mechanism"),
    ],
)
def test_security_settings_that_would_be_ignored_or_fail_later_are_config_errors(
    settings: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        client_options(KafkaConfig(**settings), "127.0.0.1:9092")
    assert err.value.key == key


def test_tls_settings_pass_through_unchanged(pki: dict[str, str]) -> None:
    opts = client_options(KafkaConfig(**ssl_kafka(pki)), "a:1,b:2")
    assert opts["bootstrap_servers"] == ["a:1", "b:2"]
    assert opts["security_protocol"] == "SSL" and opts["ssl_cafile"] == pki["ca"]
    sasl = KafkaConfig(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="u",
        sasl_plain_password="p",
        ssl_cafile=pki["ca"],
    )
    opts = client_options(sasl, "a:1")
    assert (opts["sasl_mechanism"], opts["sasl_plain_username"], opts["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "u",
        "p",
    )

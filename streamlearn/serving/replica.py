"""``streamlearn serve``: a read-only prediction replica fed by the learner's checkpoints.

No Kafka, no learning: it loads the newest checkpoint that verifies from a directory the learner
writes (a shared volume), and a background thread polls for a newer one and swaps it in, so
predictions scale out horizontally while one learner writes. A corrupt or half-copied newest file
is skipped (logged once) and the replica keeps answering with the model it has.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from streamlearn.checkpoint import CheckpointInfo, CheckpointStore
from streamlearn.config import Config
from streamlearn.errors import CheckpointError
from streamlearn.ingest.labels import LabelMap
from streamlearn.serving.app import App
from streamlearn.serving.http import make_server
from streamlearn.serving.predictor import ModelView, Predictor
from streamlearn.serving.settings import ServerSettings

log = logging.getLogger(__name__)


def label_names(state: dict[str, Any], n_classes: int) -> list[str]:
    labels = LabelMap(n_classes)
    labels.load_state_dict(state)
    return labels.names() or [str(i) for i in range(n_classes)]


class CheckpointSource:
    """``ModelSource`` over a checkpoint directory."""

    def __init__(self, directory: str | Path, predictor: Predictor) -> None:
        self.store = CheckpointStore(directory)
        self.predictor = predictor
        self.loaded: CheckpointInfo | None = None
        self._refused: set[tuple[Path, int]] = set()  # (path, size) already logged as unusable
        self._lock = threading.Lock()  # the reload thread and POST /v2/admin/reload

    def poll(self) -> bool:
        """Load the newest usable checkpoint if it is newer than the one served; True if loaded."""
        with self._lock:
            return self._poll()

    def admin(self, action: str) -> tuple[int, dict[str, Any]]:
        """``reload``: look for a newer checkpoint now instead of at the next poll."""
        if action != "reload":
            return 404, {"error": f"{action!r} is not an action of a replica (it only reads checkpoints)"}
        loaded = self.poll()
        view = self.predictor.view
        return 200, {
            "reloaded": loaded,
            "checkpoint": None if self.loaded is None else self.loaded.path.name,
            "model_version": None if view is None else view.version,
        }

    def _poll(self) -> bool:
        for info in reversed(self.store.list()):
            if self.loaded is not None and info.order <= self.loaded.order:
                return False
            try:
                key = (info.path, info.path.stat().st_size)
            except OSError:  # pruned by the learner between list() and here
                continue
            if key in self._refused:
                continue
            try:
                self._load(info)
                return True
            except (CheckpointError, KeyError, ValueError, RuntimeError) as exc:
                self._refused.add(key)
                log.error("not serving %s: %s", info.path.name, exc)
        return False

    def _load(self, info: CheckpointInfo) -> None:
        from streamlearn.checkpoint import read

        state = read(info.path)
        learner = state["learner"]
        labels = label_names(state["labels"], self.predictor.cfg.n_classes)
        self.predictor.load_state(learner["model"], int(learner["updates"]), labels)
        self.loaded = info
        log.info(
            "serving %s: model version %d, %d examples learned",
            info.path.name,
            learner["updates"],
            info.examples,
        )

    def current(self) -> ModelView | None:
        return self.predictor.view

    def ready(self) -> bool:
        return self.predictor.view is not None

    def extra_metrics(self) -> bytes:
        return b""

    def live_meta(self) -> dict[str, Any]:
        """For the live page: the served checkpoint's examples learned and age."""
        loaded = self.loaded
        if loaded is None:
            return {}
        try:
            age = time.time() - loaded.path.stat().st_mtime
        except OSError:  # pruned by the learner since
            age = None
        return {"learned": loaded.examples, "checkpoint_age": age, "checkpoint": loaded.path.name}


class ReplicaServer:
    """The replica's HTTP server and its hot-reload thread, in this process (a fleet's standby too)."""

    def __init__(self, cfg: Config, checkpoint_dir: str, *, poll_seconds: float = 2.0, role: str = "replica"):
        self.source = CheckpointSource(checkpoint_dir, Predictor(cfg.model))
        self.checkpoint_dir = checkpoint_dir
        self.poll_seconds = poll_seconds
        s = cfg.serve
        settings = ServerSettings.from_config(s, cfg.model, cfg.learner.name)
        self.app = App(self.source, settings, role=role)
        self.server = make_server(self.app, s.host, s.port)
        self.host = s.host
        self.port: int = self.server.server_port
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []

    def _reload_loop(self) -> None:
        while not self.stop_event.wait(self.poll_seconds):
            try:
                self.source.poll()
            except Exception:  # never let a bad file or an unreachable store end hot reloading
                log.exception("checkpoint poll failed")

    def start(self) -> ReplicaServer:
        """Load what there is, then serve and reload in background threads."""
        try:
            loaded = self.source.poll()
        except Exception:  # an unreachable store: not ready until the reload thread gets through
            log.exception("checkpoint poll failed")
            loaded = False
        if not loaded:
            log.warning("no usable checkpoint in %s yet: not ready until one appears", self.checkpoint_dir)
        self.app.live.start()  # the live page's history
        for target, name in ((self._reload_loop, "reload"), (self.serve_forever, "replica-http")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def serve_forever(self) -> None:
        try:
            self.server.serve_forever(poll_interval=0.5)
        finally:
            self.stop_event.set()

    def stop(self) -> None:
        """Stop serving and close the port (a fleet's new active then binds it for its own server)."""
        self.stop_event.set()
        self.app.live.stop()
        self.server.shutdown()
        self.server.server_close()
        for t in self._threads:
            t.join(timeout=10)


def run_replica(cfg: Config, checkpoint_dir: str, *, poll_seconds: float = 2.0) -> None:
    """Serve until SIGTERM/SIGINT."""
    from streamlearn.runtime import pin_threads

    pin_threads(1)
    replica = ReplicaServer(cfg, checkpoint_dir, poll_seconds=poll_seconds)
    stop = replica.stop_event

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping the replica", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    replica.start()
    log.info(
        "read-only replica serving %s on http://%s:%d (polling every %.1f s)",
        checkpoint_dir,
        replica.host,
        replica.port,
        poll_seconds,
    )
    try:
        stop.wait()
    finally:
        replica.stop()

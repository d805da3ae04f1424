"""The daemon's prediction server: a separate process that reads the learner's shared snapshot.

The learner never waits for it and it never waits for the learner: requests copy the newest
consistent snapshot (sequence lock, see ``snapshot.py``) when its version changed, then predict
from that private copy. The process dies with the learner (``PR_SET_PDEATHSIG`` plus a watchdog
on the parent pid), so a ``kill -9`` of the daemon never leaves a server answering with a stale
model.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import numpy as np

from streamlearn.config import ModelConfig, ServeConfig
from streamlearn.guard import operator
from streamlearn.metrics import disable_created_series
from streamlearn.serving.app import App
from streamlearn.serving.http import make_server
from streamlearn.serving.predictor import ModelView, Predictor
from streamlearn.serving.settings import ServerSettings
from streamlearn.serving.snapshot import BIND_FAILED, SharedSnapshot

log = logging.getLogger(__name__)

#: how long POST /v2/admin/checkpoint waits for the learner (a slow update or fsync delays it)
CHECKPOINT_WAIT_S = 60.0


class SharedMemorySource:
    """``ModelSource`` over the learner's snapshot: refreshes lazily when the version moved."""

    def __init__(self, snap: SharedSnapshot, predictor: Predictor) -> None:
        self.snap = snap
        self.predictor = predictor
        self._lock = threading.Lock()  # serialises refreshes only; predictions never take it
        self._admin_lock = threading.Lock()

    def current(self) -> ModelView | None:
        view = self.predictor.view
        published = self.snap.version
        if published >= 0 and (view is None or view.version != published):
            with self._lock:
                view = self.predictor.view
                if view is None or view.version != self.snap.version:
                    flat = np.empty(self.predictor.n_params, dtype=np.float32)
                    version = self.snap.read(flat)
                    meta = self.snap.read_meta()  # labels only: not the metrics text
                    labels = meta.get("labels") or [str(i) for i in range(self.predictor.cfg.n_classes)]
                    view = self.predictor.load_flat(flat, version, labels)
        return view

    def ready(self) -> bool:
        return self.snap.ready

    def extra_metrics(self) -> bytes:
        return self.snap.read_text()[1]

    def live_meta(self) -> dict[str, Any]:
        """The learner's published metadata (labels, task, one recent example: ``live_meta.py``)."""
        return self.snap.read_meta()

    def guard_status(self) -> dict[str, Any]:
        """The promotion gate's state as the learner last published it (empty: gate off)."""
        guard = self.snap.read_meta().get("guard")
        return guard if isinstance(guard, dict) else {}

    def admin(self, action: str) -> tuple[int, dict[str, Any]]:
        """``checkpoint``, or an operator action (``guard.operator``): ask the learner and wait for
        its answer (it acts between two updates)."""
        try:
            name, arg = operator.parse(action)
        except ValueError as exc:
            return 404 if " " not in action else 400, {"error": str(exc)}
        with self._admin_lock:  # one request at a time: the request counter has one writer
            request = self.snap.request_checkpoint(name, arg)
            deadline = time.monotonic() + CHECKPOINT_WAIT_S
            while (ok := self.snap.checkpoint_answer(request)) is None:
                if time.monotonic() > deadline:
                    return 504, {
                        "error": f"the learner did not answer within {CHECKPOINT_WAIT_S:.0f} s "
                        "(it acts between updates; see its log)"
                    }
                time.sleep(0.02)
        if not ok:
            return 503, {"error": f"{name} failed; the learner log says why"}
        if name == "checkpoint":
            return 200, {"checkpoint": "written", "request": request}
        return 200, {name: "done", "request": request}


def _die_with_parent(parent_pid: int) -> None:
    # PR_SET_PDEATHSIG is set by the learner at spawn (runtime.die_with_parent_hook); this watchdog
    # covers platforms without it.
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def server_main(
    shm_name: str, model: ModelConfig, serve: ServeConfig, learner: str, parent_pid: int, log_level: str
) -> None:
    """Run the server until the parent stops us (SIGTERM) or dies."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[server]: %(message)s")
    _die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group: the learner decides when we stop (SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    from streamlearn.runtime import pin_threads

    pin_threads(1)
    snap = SharedSnapshot.attach(shm_name)
    source = SharedMemorySource(snap, Predictor(model))
    settings = ServerSettings.from_config(serve, model, learner)
    app = App(source, settings, role="learner")
    try:
        server = make_server(app, serve.host, serve.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", serve.host, serve.port, exc.strerror or exc)
        snap.set_port(BIND_FAILED)
        return
    app.live.start()
    snap.set_port(server.server_port)
    server.serve_forever(poll_interval=0.5)


def main() -> None:
    """``python -m streamlearn.serving.server_process`` with its settings as one JSON object on stdin.

    A plain subprocess rather than multiprocessing: 'spawn' re-imports the caller's ``__main__``
    (breaking any script that embeds the daemon without a main guard) and 'fork' would copy the
    learner's thread pools and sockets. stdin keeps the bearer token out of ``ps``.
    """
    disable_created_series()  # this process exports metrics: no `_created` series
    spec: dict[str, Any] = json.loads(sys.stdin.read())
    server_main(
        spec["shm"],
        ModelConfig(**spec["model"]),
        ServeConfig(**spec["serve"]),
        spec["learner"],
        int(spec["parent_pid"]),
        spec["log_level"],
    )


if __name__ == "__main__":
    main()

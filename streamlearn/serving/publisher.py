"""The learner's side of serving: start the server process, publish snapshots and metrics to it.

Imports nothing of the HTTP server: the learner process only writes shared memory and starts
``python -m streamlearn.serving.server_process``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

from torch import nn

from streamlearn.config import Config
from streamlearn.errors import StreamlearnError
from streamlearn.runtime import die_with_parent_hook
from streamlearn.serving.predictor import flat_size, param_arrays
from streamlearn.serving.snapshot import BIND_FAILED, SharedSnapshot

log = logging.getLogger(__name__)


class ServingError(StreamlearnError):
    """The prediction server could not start (port taken, process died)."""


class Publisher:
    """The learner's handle on its prediction server; used from the learner's thread only.

    The contract, in the order the daemon calls it:

    - :meth:`start` spawns the server process and returns once it listens (its port), or raises
      :class:`ServingError` when it cannot bind or dies first. The process dies with the learner.
    - :meth:`publish_model` copies the model's parameters into the shared snapshot under
      ``version`` (the update count); it never waits for the server. A request answers with one
      published snapshot as a whole, never a half-written one. ``published_version`` is the last.
    - :meth:`publish_text` hands over the metadata (``labels`` at least) and the learner's
      Prometheus text, which the server appends to its ``/metrics``.
    - :meth:`set_ready` is what ``/v2/health/ready`` answers (with a model published).
    - :meth:`checkpoint_requested` / :meth:`answer_checkpoint`: ``POST /v2/admin/checkpoint``
      arrives as a request number; the learner checkpoints between updates and answers it.
    - :meth:`restart_if_dead` starts a new server process on the same port if the old one died.
    - :meth:`stop` ends the process and frees the shared memory; idempotent.
    """

    def __init__(self, cfg: Config, model: nn.Module, learner_name: str) -> None:
        self.cfg = cfg
        self.model = model
        self.snap = SharedSnapshot.create(flat_size(model))
        self.published_version = -1
        self.learner_name = learner_name
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout_s: float = 60.0, *, port: int | None = None) -> int:
        """Start the server process and wait until it listens; returns the port.

        ``port`` overrides serve.port (a restart reuses the port the first start bound).
        """
        serve = self.cfg.serve if port is None else dataclasses.replace(self.cfg.serve, port=port)
        self.snap.set_port(0)
        spec = {
            "shm": self.snap.name,
            "model": dataclasses.asdict(self.cfg.model),
            "serve": dataclasses.asdict(serve),
            "learner": self.learner_name,
            "parent_pid": os.getpid(),
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamlearn.serving.server_process"],
            stdin=subprocess.PIPE,
            preexec_fn=die_with_parent_hook(),
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(spec).encode())
        self.process.stdin.close()
        deadline = time.monotonic() + timeout_s
        while self.snap.port == 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if self.snap.port in (0, BIND_FAILED):
            self._end_process()
            raise ServingError(
                f"the prediction server could not listen on {serve.host}:{serve.port} "
                "(serve.host/serve.port; is the port taken? see the log above)"
            )
        self.port = self.snap.port
        return self.port

    def restart_if_dead(self) -> bool:
        """If the server process died (OOM killer, crash), start a new one on the same port.

        Returns True when it restarted one. The snapshot lives in the learner, so the new server
        answers with the current model at once. Raises ServingError if it cannot come back.
        """
        proc = self.process
        if self.port == 0 or (proc is not None and proc.poll() is None):
            return False  # never started, or alive
        if proc is not None:
            log.error(
                "the prediction server process (pid %d) exited with code %s; restarting it on port %d",
                proc.pid,
                proc.returncode,
                self.port,
            )
        self.start(port=self.port)
        return True

    def publish_model(self, version: int) -> None:
        self.snap.publish(param_arrays(self.model), version)
        self.published_version = version

    def publish_text(self, meta: dict[str, Any], metrics: bytes) -> None:
        self.snap.publish_text(meta, metrics)

    def checkpoint_requested(self) -> int:
        """A pending POST /v2/admin/checkpoint request number, or 0."""
        return self.snap.checkpoint_requested()

    def requested_action(self) -> tuple[str, int]:
        """What the pending request asks: ``checkpoint`` or an operator action, and its argument."""
        return self.snap.requested_action()

    def answer_checkpoint(self, request: int, ok: bool) -> None:
        self.snap.answer_checkpoint(request, ok)

    def set_ready(self, ready: bool) -> None:
        self.snap.set_ready(ready)

    def stop(self) -> None:
        """Stop the server process and release the shared memory (idempotent)."""
        self._end_process()
        if self.snap is not None:
            self.snap.close()
            self.snap = None  # type: ignore[assignment]

    def _end_process(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

"""Deleting old checkpoints off the writer's path: one thread that works through a queue.

In object storage each removal is a DELETE round trip (about 3 ms against moto_server here, tens of
ms to a remote region), and the learning loop waits for ``CheckpointStore.save``. Retention is
housekeeping: the new checkpoint is durable and visible once its PUT returns, so the removals of
older ones move here. A removal that fails is handed back (``take_failed``) and tried again at the
next save, as before. If the process dies first, the next writer's first save lists the location
and removes the extras then; nothing ever deletes the newest ``keep``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


class BackgroundRemover:
    """Unlinks the paths it is given, in order, on a daemon thread started at the first ``submit``."""

    def __init__(self, name: str = "checkpoint-retention") -> None:
        self._name = name
        self._queue: deque[Path] = deque()
        self._failed: list[Path] = []
        self._busy = 0  # queued + in progress
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, paths: Iterable[Path]) -> None:
        with self._cond:
            for p in paths:
                self._queue.append(p)
                self._busy += 1
            if self._busy and self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def take_failed(self) -> list[Path]:
        """The paths whose removal failed since the last call (the caller tries them again)."""
        with self._cond:
            failed, self._failed = self._failed, []
        return failed

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every submitted removal is done (or failed); False if ``timeout`` ran out."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    @property
    def pending(self) -> int:
        with self._cond:
            return self._busy

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue))
                path = self._queue.popleft()
            ok = True
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # never fatal: an extra old checkpoint costs only space
                log.warning(
                    "could not remove old checkpoint %s (tried again at the next save): %s", path, exc
                )
                ok = False
            except Exception:  # a bug must not kill the thread silently and leave wait() hanging
                log.exception("removing old checkpoint %s failed", path)
                ok = False
            with self._cond:
                if not ok:
                    self._failed.append(path)
                self._busy -= 1
                self._cond.notify_all()

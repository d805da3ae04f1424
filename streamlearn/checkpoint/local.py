"""Checkpoints in a local directory (or a shared volume): write to a temporary, fsync, rename, fsync dir.

A crash leaves either the old set or the new file, never a half-written file under a final name;
the temporaries a crash leaves behind (``.ckpt-*.tmp``) are never listed and are removed at start.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class LocalDirectory:
    """``Storage`` over a directory, created on the first write."""

    def __init__(self, directory: str | Path) -> None:
        self.location = Path(directory)

    def list(self) -> list[Path]:
        if not self.location.is_dir():
            return []
        return list(self.location.iterdir())

    def put(self, name: str, blob: bytes) -> Path:
        final = self.location / name
        tmp = self.location / f".{name}.{os.getpid()}.tmp"
        try:
            self.location.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            dir_fd = os.open(self.location, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        return final

    def remove_incomplete(self) -> int:
        removed = 0
        if self.location.is_dir():
            for p in self.location.glob(".ckpt-*.tmp"):
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed += 1
        if removed:
            log.warning(
                "removed %d half-written checkpoint file(s) left by a crash in %s", removed, self.location
            )
        return removed

"""Checkpoints: one file holds everything needed to continue, written atomically, verified on load.

File layout: a magic line, the SHA-256 of the payload in hex, a newline, then the payload — a
``torch.save`` of one dict of tensors and plain values. Written to a temporary file, fsynced,
renamed over, and the directory fsynced, so a crash leaves either the old set or the new file,
never a half-written one. Loaded with ``torch.load(weights_only=True)``: a checkpoint can never
execute code, whoever wrote the file.

The daemon commits Kafka offsets only after ``save`` returns, so the newest durable checkpoint
and the committed offsets never disagree in the direction that loses examples.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from streamlearn.errors import CheckpointError

log = logging.getLogger(__name__)

MAGIC = b"STREAMLEARN-CHECKPOINT-1\n"
_NAME = re.compile(r"^ckpt-(\d{12})-(\d{6})\.slc$")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    examples: int
    seq: int


def encode(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def decode(blob: bytes, name: str = "<bytes>") -> dict[str, Any]:
    """Verify and load a checkpoint's bytes; CheckpointError says what is wrong with it."""
    if not blob.startswith(MAGIC):
        raise CheckpointError(f"{name}: not a streamlearn checkpoint (bad header)")
    head_end = len(MAGIC) + 65
    digest, payload = blob[len(MAGIC) : head_end - 1], blob[head_end:]
    if blob[head_end - 1 : head_end] != b"\n" or hashlib.sha256(payload).hexdigest().encode() != digest:
        raise CheckpointError(f"{name}: checksum mismatch (truncated or corrupted)")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as exc:  # the unpickler refuses anything but tensors and plain values
        raise CheckpointError(f"{name}: refused to load: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{name}: payload is {type(state).__name__}, expected a dict")
    return state


def read(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read: {exc.strerror}") from None
    return decode(blob, str(p))


class CheckpointStore:
    """A directory of checkpoints, newest last; keeps the last ``keep``."""

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.dir = Path(directory)
        self.keep = max(1, int(keep))
        self._seq = 0

    def list(self) -> list[CheckpointInfo]:
        if not self.dir.is_dir():
            return []
        found = []
        for p in self.dir.iterdir():
            m = _NAME.match(p.name)
            if m:
                found.append(CheckpointInfo(p, int(m.group(1)), int(m.group(2))))
        return sorted(found, key=lambda c: (c.examples, c.seq))

    def save(self, state: dict[str, Any], examples: int) -> Path:
        """Write atomically and durably; raise CheckpointError (and leave older ones) on failure."""
        blob = encode(state)
        existing = self.list()
        # seq disambiguates two checkpoints at the same example count (e.g. SIGTERM right after one)
        self._seq = max([self._seq, *[c.seq for c in existing if c.examples == examples]]) + 1
        final = self.dir / f"ckpt-{examples:012d}-{self._seq % 1_000_000:06d}.slc"
        tmp = self.dir / f".{final.name}.{os.getpid()}.tmp"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            dir_fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise CheckpointError(f"cannot write checkpoint in {self.dir}: {exc.strerror or exc}") from exc
        self._prune()
        return final

    def remove_stale_temporaries(self) -> int:
        """Delete half-written ``.ckpt-*.tmp`` files a crash left behind (they only waste space).

        Only the single learner that owns this directory may call this, at start, before it writes.
        """
        removed = 0
        if self.dir.is_dir():
            for p in self.dir.glob(".ckpt-*.tmp"):
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed += 1
        if removed:
            log.warning("removed %d half-written checkpoint file(s) left by a crash in %s", removed, self.dir)
        return removed

    def _prune(self) -> None:
        for old in self.list()[: -self.keep]:
            try:
                old.path.unlink()
            except OSError as exc:  # never fatal: an extra old file costs only disk
                log.warning("could not remove old checkpoint %s: %s", old.path, exc)

    def latest(self) -> tuple[CheckpointInfo, dict[str, Any]] | None:
        """The newest checkpoint that verifies; corrupt ones are logged and skipped."""
        for info in reversed(self.list()):
            try:
                return info, read(info.path)
            except CheckpointError as exc:
                log.error("skipping unusable checkpoint: %s", exc)
        return None


def describe(state: dict[str, Any]) -> dict[str, Any]:
    """A human/JSON summary of a checkpoint (``streamlearn checkpoint inspect``)."""
    learner = state.get("learner", {})
    model = learner.get("model", {})
    buffer = learner.get("buffer")
    return {
        "format": state.get("format"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.get("created", 0))),
        "config_fingerprint": state.get("config_fingerprint"),
        "learner": learner.get("learner"),
        "hparams": learner.get("hparams"),
        "updates": learner.get("updates"),
        "examples_learned": learner.get("examples"),
        "model_parameters": {k: list(v.shape) for k, v in model.items()},
        "replay_buffer": None
        if buffer is None
        else {"capacity": buffer["capacity"], "size": int(buffer["x"].shape[0]), "seen": buffer["seen"]},
        "labels": state.get("labels"),
        "offsets": state.get("offsets"),
        "counters": state.get("counters"),
        "metrics": (state.get("metrics") or {}).get("summary"),
    }

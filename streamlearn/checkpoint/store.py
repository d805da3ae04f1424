"""The checkpoint store: names, ordering, retention and "newest good one", over any ``Storage``.

One checkpoint is one file or object named ``ckpt-<examples>-<seq>.slc``, or
``ckpt-<examples>-<seq>-e<epoch>.slc`` when written by the active learner of a fleet at leadership
epoch ``epoch`` (see ``streamlearn.fleet``; no suffix means epoch 0); the daemon's ``examples``
is the messages the model has read, which never decreases (a rollback lowers the learned count).
Checkpoints are ordered by
(epoch, examples, seq): a checkpoint of a deposed leader (lower epoch) never wins over one of its
successor, whatever it learned since. Whichever
the storage — a local directory or an ``s3://bucket/prefix`` — the store guarantees:

- a checkpoint becomes visible under its name only once complete (rename / single PUT);
- its SHA-256 is verified on read, and it is loaded with ``torch.load(weights_only=True)``;
- ``latest`` returns the newest checkpoint that verifies: a corrupt or truncated newest one is
  logged and skipped, the previous one is used;
- only the last ``keep`` are kept (in object storage the older ones are deleted on a thread, off
  ``save``'s path: see ``retention``); leftovers of interrupted writes are removed at start.

The daemon commits Kafka offsets only after ``save`` returns, so the newest durable checkpoint
and the committed offsets never disagree in the direction that loses examples.
"""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from streamlearn.checkpoint.codec import decode, encode
from streamlearn.checkpoint.retention import BackgroundRemover
from streamlearn.errors import CheckpointError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt-(\d{12})-(\d{6})(?:-e(\d{1,12}))?\.slc$")
OBJECT_URL_SCHEME = "s3://"  # s3.OBJECT_URL_SCHEME; not imported from there, which would load boto3


class Storage(Protocol):
    """Where checkpoints live. Errors are ``OSError``s (the store turns them into CheckpointError).

    ``put`` must make ``name`` appear only once all of ``blob`` is stored: never a partial object
    under a final name. ``list`` returns every entry directly in the location (the store keeps the
    ones named like checkpoints); each returned path reads itself (``read_bytes``), removes itself
    (``unlink``) and knows its size (``stat().st_size``). ``remove_incomplete`` deletes what
    interrupted ``put``s left behind and returns how many; only the single writer calls it, at start.
    """

    location: Path

    def list(self) -> list[Path]: ...

    def put(self, name: str, blob: bytes) -> Path: ...

    def remove_incomplete(self) -> int: ...


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    examples: int
    seq: int
    #: the leadership epoch of the writer (0: not written by a fleet's active learner)
    epoch: int = 0

    @property
    def order(self) -> tuple[int, int, int]:
        """Newest is greatest: a higher epoch wins, then more examples, then the later write."""
        return (self.epoch, self.examples, self.seq)


def _parse(path: Path) -> CheckpointInfo | None:
    """The checkpoint a listed entry is, by its name; None for anything else."""
    m = _NAME.match(path.name)
    if m is None:
        return None
    return CheckpointInfo(path, int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def epoch_of(name: str) -> int | None:
    """The leadership epoch a checkpoint's name carries (0 without a suffix); None if not a checkpoint."""
    m = _NAME.match(name)
    return None if m is None else int(m.group(3) or 0)


def is_object_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(OBJECT_URL_SCHEME)


def open_storage(location: str | Path) -> Storage:
    """``s3://BUCKET/PREFIX`` is object storage; anything else is a local directory."""
    if is_object_url(location):
        from streamlearn.checkpoint.s3 import S3Prefix  # boto3 loads only when S3 is used

        return S3Prefix(str(location))
    from streamlearn.checkpoint.local import LocalDirectory

    return LocalDirectory(location)


def _as_path(path: str | Path) -> Path:
    if isinstance(path, Path):  # an S3 ObjectPath stays one (Path(p) would drop its client)
        return path
    if is_object_url(path):
        from streamlearn.checkpoint.s3 import object_path

        return object_path(path)
    return Path(path)


def read(path: str | Path) -> dict[str, Any]:
    """Read and verify one checkpoint: a file, an ``s3://bucket/key`` URL or a listed ``info.path``."""
    p = _as_path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return decode(blob, str(p))


class CheckpointStore:
    """Checkpoints in a directory or ``s3://bucket/prefix``, newest last; keeps the last ``keep``."""

    def __init__(
        self, directory: str | Path, keep: int = 3, *, background_removal: bool | None = None
    ) -> None:
        self.storage = open_storage(directory)
        self.dir = self.storage.location
        self.keep = max(1, int(keep))
        self._seq = 0
        #: leadership epoch written into new names: the fleet sets it when this process becomes the
        #: active learner; otherwise the newest seen (``latest``), so a restart never loses to its past
        self.epoch = 0
        #: the checkpoints in the location after this writer's last save: one learner writes a
        #: location, so later saves need no listing (one S3 LIST less per checkpoint)
        self._kept: list[CheckpointInfo] | None = None
        #: object stores delete old checkpoints on a thread (a DELETE round trip each), so ``save``
        #: returns once the new one is durable; a local unlink costs microseconds and stays inline
        if background_removal is None:
            background_removal = is_object_url(directory)
        self._remover = BackgroundRemover() if background_removal else None

    def new_writer(self, epoch: int) -> None:
        """This process became the fleet's active learner at ``epoch``: name new checkpoints with it,
        and list the location again before the next save (another learner wrote there meanwhile)."""
        self.epoch = epoch
        self._kept = None

    def list(self) -> list[CheckpointInfo]:
        """Complete checkpoints, oldest first: one directory read or one S3 LIST, no reads."""
        try:
            entries = self.storage.list()
        except OSError as exc:
            raise CheckpointError(f"cannot list checkpoints in {self.dir}: {exc.strerror or exc}") from exc
        found = [info for info in map(_parse, entries) if info is not None]
        return sorted(found, key=lambda c: c.order)

    def save(self, state: dict[str, Any], examples: int) -> Path:
        """Write atomically and durably; raise CheckpointError (and leave older ones) on failure."""
        blob = encode(state)
        existing = self.list() if self._kept is None else self._kept
        if self._remover is not None:  # removals that failed on the thread: tried again now
            listed = {c.path.name for c in existing}
            retry = [c for c in map(_parse, self._remover.take_failed()) if c is not None]
            existing = [*existing, *(c for c in retry if c.path.name not in listed)]
        # seq disambiguates two checkpoints at the same example count (e.g. SIGTERM right after one)
        self._seq = max([self._seq, *[c.seq for c in existing if c.examples == examples]]) + 1
        seq = self._seq % 1_000_000
        suffix = f"-e{self.epoch}" if self.epoch else ""
        try:
            path = self.storage.put(f"ckpt-{examples:012d}-{seq:06d}{suffix}.slc", blob)
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint in {self.dir}: {exc.strerror or exc}") from exc
        self._kept = self._prune([*existing, CheckpointInfo(path, examples, seq, self.epoch)])
        return path

    def wait_for_removals(self, timeout: float | None = None) -> bool:
        """Block until old checkpoints queued for removal are gone (at a clean stop, so that exactly
        ``keep`` remain); False if ``timeout`` ran out. Immediate for a local directory."""
        return self._remover is None or self._remover.wait(timeout)

    def remove_stale_temporaries(self) -> int:
        """Delete what interrupted writes left behind (temporary files, unfinished multipart uploads).

        Only the single learner that owns this location may call this, at start, before it writes.
        """
        try:
            return self.storage.remove_incomplete()
        except OSError as exc:  # never fatal: leftovers only cost space, and are never read
            log.warning("could not clean up interrupted checkpoint writes in %s: %s", self.dir, exc)
            return 0

    def _prune(self, found: Iterable[CheckpointInfo]) -> builtins.list[CheckpointInfo]:
        """Remove all but the newest ``keep``; returns what is left (a failed removal stays listed)."""
        ordered = sorted(found, key=lambda c: c.order)
        if self._remover is not None:
            self._remover.submit(old.path for old in ordered[: -self.keep])
            return ordered[-self.keep :]
        stuck = []
        for old in ordered[: -self.keep]:
            try:
                old.path.unlink(missing_ok=True)
            except OSError as exc:  # never fatal: an extra old checkpoint costs only space
                log.warning("could not remove old checkpoint %s: %s", old.path, exc)
                stuck.append(old)  # tried again at the next save
        return stuck + ordered[-self.keep :]

    def latest_info(self) -> CheckpointInfo | None:
        """The newest complete checkpoint, not yet verified: cheap enough to poll (one listing)."""
        found = self.list()
        return found[-1] if found else None

    def read(self, info: CheckpointInfo) -> dict[str, Any]:
        """Read and verify one listed checkpoint (CheckpointError if it does not verify)."""
        return read(info.path)

    def latest(self) -> tuple[CheckpointInfo, dict[str, Any]] | None:
        """The newest checkpoint that verifies; corrupt ones are logged and skipped."""
        found = self.list()
        if found:
            self.epoch = max(self.epoch, found[-1].epoch)
        for info in reversed(found):
            try:
                return info, read(info.path)
            except CheckpointError as exc:
                log.error("skipping unusable checkpoint: %s", exc)
        return None


def find(location: str) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file or object, or else the newest good one in a directory or prefix (``inspect``)."""
    path = _as_path(location)
    names_a_checkpoint = bool(_NAME.match(path.name)) if is_object_url(location) else not path.is_dir()
    if names_a_checkpoint:
        return path, read(path)
    found = CheckpointStore(location).latest()
    if found is None:
        raise CheckpointError(f"{location}: no usable checkpoint")
    return found[0].path, found[1]

"""The leadership lease, kept where the checkpoints are: an S3 object written conditionally, or a lock file.

**Object storage** (``checkpoint.dir: s3://bucket/prefix``): the object ``<prefix>/leader.json``
holds ``{holder, epoch, n}``. Every write is conditional, so the store itself decides every race:

- *acquire* a missing lease with ``If-None-Match: *``; take over an expired or released one with
  ``If-Match: <the ETag seen>`` and ``epoch + 1``: of two standbys racing, one write wins (412 for
  the other);
- *renew* with ``If-Match: <our last ETag>`` (``n`` changes the body, hence the ETag, each time);
  a 412 means someone else took over: the holder is deposed, for good;
- *expiry* is judged by the standby on its own monotonic clock: the lease is dead when its ETag has
  not changed during ``lease_seconds`` of continuous observation. No wall clocks are compared, and
  a standby that cannot read the store restarts its count (it cannot see renewals it misses).

**Local directory**: an exclusive ``flock`` on ``<dir>/.leader.lock``; the kernel releases it when
the holder dies, so a standby takes over at once. The epoch is kept in the lock file. A paused
holder keeps its lock: there is no takeover from a live process, hence no zombie (one host only;
``flock`` is not trusted on network filesystems).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: the lease object's name under the checkpoint prefix (not a checkpoint name: listings skip it)
LEASE_NAME = "leader.json"
LOCK_NAME = ".leader.lock"
#: the lease client's timeouts: a renewal that cannot get through in this time is retried at the next
#: renewal (a fifth of the lease later), never blocking the learner, which renews from its own thread
CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 2.0


class Lease(Protocol):
    """``try_acquire`` → the new epoch, or None (someone else holds it, or the store is unreachable);
    ``renew`` → True (still ours), False (taken over: deposed), None (store unreachable: unknown)."""

    holder_seen: str | None

    def until_expiry(self) -> float | None:
        """Seconds until the lease being watched may be taken over, if known (a standby sleeps no longer)."""
        ...

    def try_acquire(self, min_epoch: int) -> int | None: ...

    def renew(self) -> bool | None: ...

    def release(self) -> bool: ...


def open_lease(location: str, lease_seconds: float, holder: str) -> Lease:
    if location.startswith("s3://"):
        return S3Lease(location, lease_seconds, holder)
    return LocalLease(location, holder)


class S3Lease:
    def __init__(self, url: str, lease_seconds: float, holder: str, client: Any = None) -> None:
        from streamlearn.checkpoint.s3 import parse_url

        self.bucket, prefix = parse_url(url)
        self.key = prefix + LEASE_NAME
        self.lease_seconds = lease_seconds
        self.holder = holder
        self.client = client or _lease_client()
        self.etag: str | None = None  # our last write while we hold it
        self.epoch = 0
        self.holder_seen: str | None = None
        self._seen: tuple[str, float] | None = None  # (ETag, when first seen unchanged)
        self._n = 0

    def _get(self) -> tuple[str, dict[str, Any]] | None:
        """(ETag, body) of the lease object, None if there is none; OSError if the store fails."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
            body = got["Body"].read()
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise OSError(f"lease read failed: {exc}") from exc
        except BotoCoreError as exc:
            raise OSError(f"lease read failed: {exc}") from exc
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        return str(got["ETag"]), parsed if isinstance(parsed, dict) else {}

    def _put(self, body: dict[str, Any], **condition: str) -> str | None:
        """Conditional write; the new ETag, None on 412 (the condition failed); OSError otherwise."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            put = self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=json.dumps(body).encode(), **condition
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412):  # 409: a concurrent conditional write is in flight (AWS)
                return None
            raise OSError(f"lease write failed: {exc}") from exc
        except BotoCoreError as exc:
            raise OSError(f"lease write failed: {exc}") from exc
        return str(put["ETag"])

    def _body(self, *, released: bool = False) -> dict[str, Any]:
        self._n += 1
        return {
            "holder": self.holder,
            "epoch": self.epoch,
            "n": self._n,
            "released": released,
            "lease_seconds": self.lease_seconds,
            "written_at": time.time(),  # for people reading the object; never compared
        }

    def until_expiry(self) -> float | None:
        if self._seen is None:
            return None
        return self.lease_seconds - (time.monotonic() - self._seen[1])

    def try_acquire(self, min_epoch: int) -> int | None:
        try:
            current = self._get()
        except OSError as exc:
            log.debug("%s", exc)
            self._seen = None  # renewals may be happening unseen: start counting again
            return None
        now = time.monotonic()
        condition: dict[str, str]
        if current is None:
            epoch, condition = min_epoch + 1, {"IfNoneMatch": "*"}
        else:
            etag, body = current
            self.holder_seen = str(body.get("holder"))
            if not body.get("released"):
                if self._seen is None or self._seen[0] != etag:
                    self._seen = (etag, now)
                    return None
                if now - self._seen[1] < self.lease_seconds:
                    return None
            epoch, condition = max(int(body.get("epoch", 0)), min_epoch) + 1, {"IfMatch": etag}
        self.epoch = epoch
        try:
            new = self._put(self._body(), **condition)
        except OSError as exc:
            log.debug("%s", exc)
            new = None
        self._seen = None
        if new is None:
            return None
        self.etag = new
        return epoch

    def renew(self) -> bool | None:
        try:
            new = self._put(self._body(), IfMatch=str(self.etag))
            if new is None:
                # A renewal that timed out may still have landed: then the object is still ours.
                current = self._get()
                if current is None:
                    return False
                etag, body = current
                self.holder_seen = str(body.get("holder"))
                if body.get("holder") != self.holder or body.get("epoch") != self.epoch:
                    return False
                new = etag
        except OSError as exc:
            log.debug("%s", exc)
            return None
        self.etag = new
        return True

    def release(self) -> bool:
        """Mark the lease released (a graceful stop): a standby takes over at its next look."""
        try:
            return self._put(self._body(released=True), IfMatch=str(self.etag)) is not None
        except OSError as exc:
            log.debug("%s", exc)
            return False


def _lease_client() -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": 1},
        request_checksum_calculation="when_required",
    )
    return boto3.session.Session().client("s3", config=config)


class LocalLease:
    def __init__(self, directory: str | Path, holder: str) -> None:
        self.path = Path(directory) / LOCK_NAME
        self.holder = holder
        self.holder_seen: str | None = None
        self._fd: int | None = None

    def try_acquire(self, min_epoch: int) -> int | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            log.debug("lock file: %s", exc)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self.holder_seen = "the process holding " + str(self.path)
            return None
        raw = os.pread(fd, 64, 0).decode(errors="replace").strip()
        epoch = max(int(raw) if raw.isdigit() else 0, min_epoch) + 1
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{epoch}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return epoch

    def until_expiry(self) -> float | None:
        return None  # the kernel releases the lock when the holder dies: nothing to count

    def renew(self) -> bool | None:
        return True  # the kernel holds the lock until this process ends

    def release(self) -> bool:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return True

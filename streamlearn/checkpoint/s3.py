"""Checkpoints in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Cloudflare R2): ``s3://BUCKET/PREFIX``.

Atomic by construction: each checkpoint is one PUT of the whole object, and S3 makes an object
visible only once its upload completed — a reader never sees a partial checkpoint under a final
name. Multipart uploads a crashed tool left under the prefix are invisible too, but cost storage
until aborted, so ``remove_incomplete`` aborts them at start.

Endpoint and credentials come from the standard AWS chain, never from the config file:
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for a non-AWS endpoint, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, web identity (EKS IRSA), ECS/EC2 instance roles.

A store that is down must fail a checkpoint in seconds, not stall learning: short connect/read
timeouts and a bounded number of attempts, after which the error surfaces as ``CheckpointError``
(the daemon counts it and goes on learning; the offsets stay at the last durable checkpoint).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PosixPath
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

log = logging.getLogger(__name__)

OBJECT_URL_SCHEME = "s3://"

#: seconds to open a connection: a live endpoint answers in milliseconds
CONNECT_TIMEOUT_S = 2.0
#: seconds a socket may wait for the next bytes (not the whole transfer); S3 answers a PUT or starts a
#: GET well within it, and a hung store then costs at most attempts × this per call
READ_TIMEOUT_S = 5.0
#: attempts per request, first one included (botocore "standard" retries: throttling, 5xx, resets);
#: the standard variable ``AWS_MAX_ATTEMPTS`` overrides it
MAX_ATTEMPTS = 3


def make_client() -> Any:
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={
            "mode": "standard",
            "total_max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS") or MAX_ATTEMPTS),
        },
        # Integrity in transit: the SHA-256 of every body is signed into the request
        # (x-amz-content-sha256, SigV4), and the server refuses a body that does not match it
        # (XAmzContentSHA256Mismatch on AWS; MinIO and Ceph RGW check it too). botocore signs the
        # body by default only over plain HTTP; signing it always costs ~0.5 ms a MiB, less than the
        # Content-MD5 (~1.2 ms a MiB) that the same protection over HTTPS would otherwise need. Our
        # own SHA-256 in the checkpoint is verified on every read as well. The newer default CRC
        # checksum headers are off: some S3-compatible servers reject them.
        request_checksum_calculation="when_required",
        s3={"payload_signing_enabled": True},
    )
    return boto3.session.Session().client("s3", config=config)


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b/")``: the prefix is a "directory", always ending in /."""
    if not url.startswith(OBJECT_URL_SCHEME):
        raise ValueError(f"{url!r} is not an s3:// URL")
    bucket, _, prefix = url[len(OBJECT_URL_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket (expected s3://BUCKET/PREFIX)")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def _os_error(exc: Exception) -> OSError:
    """botocore's errors as the OSErrors callers of a ``Path`` already handle."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "?"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = f"{code}: {err.get('Message', exc)}"
        if code in ("NoSuchKey", "NoSuchBucket", "404") or status == 404:
            return FileNotFoundError(errno.ENOENT, message)
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            return PermissionError(errno.EACCES, message)
        return OSError(errno.EIO, message)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermissionError(
            errno.EACCES, f"{exc} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"
        )
    if isinstance(exc, ReadTimeoutError):
        return TimeoutError(errno.ETIMEDOUT, f"object store timed out: {exc}")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return ConnectionError(errno.EHOSTUNREACH, f"object store unreachable: {exc}")
    return OSError(errno.EIO, f"object store error: {exc}")


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise _os_error(exc) from exc


class ObjectPath(PosixPath):
    """An S3 object as the few ``Path`` methods checkpoint readers use.

    ``CheckpointInfo.path`` is a ``Path``; code that reads, sizes, names or deletes a listed
    checkpoint (the replica's poller, ``checkpoint inspect``, retention) thus works on either store.
    ``str()`` is the ``s3://bucket/key`` URL; the size comes from the LIST that found the object.
    """

    _client: Any
    _bucket: str
    _key: str
    _size: int | None

    @classmethod
    def at(cls, client: Any, bucket: str, key: str, size: int | None = None) -> ObjectPath:
        # The Path parts only serve .name and hashing; the real key is kept as given (S3 keys may
        # hold "//", which a path would collapse).
        p = cls(bucket, key.lstrip("/"))
        p._client, p._bucket, p._key, p._size = client, bucket, key, size
        return p

    def __str__(self) -> str:
        if not hasattr(self, "_bucket"):  # a derived path (.parent, .with_name): plain parts, no client
            return f"{OBJECT_URL_SCHEME}{super().__str__()}"
        return f"{OBJECT_URL_SCHEME}{self._bucket}/{self._key}"

    def read_bytes(self) -> bytes:
        with _translated():
            body = self._client.get_object(Bucket=self._bucket, Key=self._key)["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
        return data

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        if self._size is None:
            with _translated():
                self._size = int(
                    self._client.head_object(Bucket=self._bucket, Key=self._key)["ContentLength"]
                )
        return os.stat_result((stat.S_IFREG | 0o444, 0, 0, 1, 0, 0, self._size, 0, 0, 0))

    def unlink(self, missing_ok: bool = False) -> None:
        with _translated():  # deleting a missing key succeeds in S3: missing_ok is the only mode
            self._client.delete_object(Bucket=self._bucket, Key=self._key)


def object_path(url: str, client: Any = None) -> ObjectPath:
    bucket, key = parse_url(url)
    return ObjectPath.at(client or make_client(), bucket, key.rstrip("/"))


class S3Prefix:
    """``Storage`` over the objects directly under ``s3://bucket/prefix/``."""

    def __init__(self, url: str, client: Any = None) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.client = client or make_client()
        self.location: Path = ObjectPath.at(self.client, self.bucket, self.prefix.rstrip("/"))

    def list(self) -> list[Path]:
        found: list[Path] = []
        with _translated():
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
            )
            for page in pages:  # 1000 keys a page: one request for any sane prefix
                for obj in page.get("Contents", []):
                    found.append(ObjectPath.at(self.client, self.bucket, obj["Key"], int(obj["Size"])))
        return found

    def put(self, name: str, blob: bytes) -> Path:
        key = self.prefix + name
        with _translated():  # one PUT: the object appears whole or not at all
            # the body's signed SHA-256 makes the server refuse it if damaged in transit (make_client)
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=blob, ContentType="application/octet-stream"
            )
        return ObjectPath.at(self.client, self.bucket, key, len(blob))

    def remove_incomplete(self) -> int:
        aborted = 0
        with _translated():
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        if aborted:
            log.warning("aborted %d unfinished multipart upload(s) under %s", aborted, self.location)
        return aborted

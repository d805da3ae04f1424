"""A checkpoint's bytes: a magic line, the SHA-256 of the payload in hex, a newline, the payload.

The payload is a ``torch.save`` of one dict of tensors and plain values. It is loaded with
``torch.load(weights_only=True)``: a checkpoint can never execute code, whoever wrote it.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import torch

from streamlearn.errors import CheckpointError

MAGIC = b"STREAMLEARN-CHECKPOINT-1\n"


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

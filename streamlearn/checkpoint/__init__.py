"""Checkpoints: one file or object holds everything needed to continue, written atomically, verified on load.

``codec`` is the byte format (magic, SHA-256, ``torch.save`` payload, safe load); ``store`` names,
orders, prunes and picks the newest good checkpoint over a ``Storage``: ``local`` (a directory:
temporary + fsync + rename) or ``s3`` (``s3://bucket/prefix`` on any S3 API: one PUT per checkpoint).
"""

from streamlearn.checkpoint.codec import MAGIC, decode, encode
from streamlearn.checkpoint.describe import describe
from streamlearn.checkpoint.store import CheckpointInfo, CheckpointStore, Storage, find, is_object_url, read

__all__ = [
    "MAGIC",
    "CheckpointInfo",
    "CheckpointStore",
    "Storage",
    "decode",
    "describe",
    "encode",
    "find",
    "is_object_url",
    "read",
]

"""The MNIST test set shipped inside the package, read from its original IDX files.

The benchmark streams are defined on exactly these 10,000 images, so the loader refuses anything
that does not look like them (wrong magic, wrong shape, truncated data) instead of quietly building
a different benchmark. See ``streamlearn/data/mnist/README.md`` for the source and licence.
"""

from __future__ import annotations

import gzip
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

# A plain path rather than importlib.resources: Traversable moved modules between 3.10 and 3.11,
# and the package is always installed as files on disk (editable or wheel), never zipped.
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"
IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
LABELS_FILE = "t10k-labels-idx1-ubyte.gz"

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), then the number of dimensions.
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_UBYTE_TYPE_CODE = 0x08

N_TEST = 10_000
SIDE = 28
N_CLASSES = 10


def parse_idx(raw: bytes, expected_magic: int, source: str) -> np.ndarray:
    """Decode one uncompressed IDX blob of unsigned bytes; ``source`` names it in error messages.

    The length check is exact: trailing bytes mean the header and the data disagree, which is
    as much a sign of a damaged file as missing bytes are.
    """
    if len(raw) < 4:
        raise ValueError(f"{source}: corrupt IDX file: {len(raw)} bytes, too short for a header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{source}: corrupt IDX file: magic number {magic}, expected {expected_magic}")
    if (magic >> 8) & 0xFF != _UBYTE_TYPE_CODE:
        raise ValueError(f"{source}: IDX type code {(magic >> 8) & 0xFF:#x} is not unsigned byte")
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{source}: corrupt IDX file: header truncated ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_len = header_len + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected_len:
        raise ValueError(
            f"{source}: corrupt IDX file: {len(raw)} bytes, header {shape} implies {expected_len}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def read_idx_gz(path: Path, expected_magic: int) -> np.ndarray:
    """Read a gzip-compressed IDX file; a damaged gzip stream becomes a ValueError naming the file."""
    compressed = path.read_bytes()  # a missing file stays a FileNotFoundError
    try:
        raw = gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc
    return parse_idx(raw, expected_magic, str(path))


def read_mnist_test(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check the MNIST test split from ``directory`` (uncached; see :func:`load_mnist_test`)."""
    images = read_idx_gz(directory / IMAGES_FILE, IMAGES_MAGIC)
    labels = read_idx_gz(directory / LABELS_FILE, LABELS_MAGIC)
    if images.shape != (N_TEST, SIDE, SIDE):
        raise ValueError(f"{directory / IMAGES_FILE}: shape {images.shape}, expected {(N_TEST, SIDE, SIDE)}")
    if labels.shape != (N_TEST,):
        raise ValueError(f"{directory / LABELS_FILE}: shape {labels.shape}, expected {(N_TEST,)}")
    if int(labels.max()) >= N_CLASSES:
        raise ValueError(f"{directory / LABELS_FILE}: label {int(labels.max())} outside 0..{N_CLASSES - 1}")
    labels64 = labels.astype(np.int64)
    # Both arrays end up shared through the cache; read-only keeps one caller from
    # silently changing the benchmark for every other (frombuffer is read-only already).
    labels64.setflags(write=False)
    return images, labels64


@lru_cache(maxsize=1)
def load_mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The packaged MNIST test set: images uint8 (10000, 28, 28) and labels int64 (10000,).

    Cached because every benchmark stream starts from it; the arrays are read-only.
    """
    return read_mnist_test(DATA_DIR)

"""numba settings and the small loops the compiled kernels share (``compiled.py`` has the overview).

``_JIT`` is every kernel's decorator arguments: ``cache`` on where numba finds a writable cache
directory (decided once, at import), ``nogil``, and no ``fastmath`` (float results must not depend on
the compiler's reassociation) and no ``parallel`` (one thread, as ``runtime.pin_threads`` wants).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import numba
import numpy as np
from numba import njit

log = logging.getLogger(__name__)
F32 = np.float32


def _probe() -> None:
    pass


def _cache_possible() -> bool:
    """Whether numba finds a writable cache for this file (it raises at decoration when not)."""
    try:
        njit(cache=True)(_probe)
    except RuntimeError:
        return False
    return True


def _choose_cache() -> bool:
    """Cache compiled code on disk where some directory is writable; otherwise compile every start.

    numba looks at NUMBA_CACHE_DIR, then beside this file, then the user's cache directory. In a
    container with a read-only root filesystem all three can fail, and numba then raises on import;
    the temp directory (a writable volume there) is the last resort.
    """
    if _cache_possible():
        return True
    try:
        fallback = os.path.join(tempfile.gettempdir(), f"streamlearn-numba-{os.getuid()}")
    except OSError:  # no usable temp directory at all
        fallback = ""
    numba.config.CACHE_DIR = fallback  # type: ignore[attr-defined]  # set from the environment at import
    if fallback and _cache_possible():
        log.info("numba cache in %s (NUMBA_CACHE_DIR and the package directory are not writable)", fallback)
        return True
    # Who imports this decides what compiles: the decoder's scanner (fastx.py, every daemon) takes
    # ~1 s; the learner kernels (fast_path: compiled) 10-20 s more.
    log.warning(
        "numba cannot cache compiled code (no writable cache directory; set NUMBA_CACHE_DIR): it "
        "compiles at each start: ~1 s for the message decoder's scanner, 10-20 s more for the "
        "compiled learner kernels (fast_path: compiled)"
    )
    return False


_JIT: dict[str, Any] = {"cache": _choose_cache(), "nogil": True, "fastmath": False}


@njit(**_JIT)
def _relu_into(out, z):
    for i in range(z.shape[0]):
        out[i] = z[i] if z[i] > 0 else F32(0.0)


@njit(**_JIT)
def _add_outer(M, alpha, u, v):
    """M += alpha·u vᵀ, scaling u first as BLAS sger does."""
    a = F32(alpha)
    for i in range(M.shape[0]):
        s = a * u[i]
        row = M[i]
        for j in range(v.shape[0]):
            row[j] += s * v[j]


@njit(**_JIT)
def _nonzero_into(out, v):
    """Write the indices of v's non-zero entries to out; their count. Branch-free: which pixels
    are zero is data the CPU cannot predict, and a mispredicted branch costs more than a store."""
    n = 0
    for p in range(v.shape[0]):
        out[n] = p
        n += v[p] != 0
    return n


@njit(**_JIT)
def _sq(v):
    s = 0.0
    for i in range(v.shape[0]):
        s += float(v[i]) * float(v[i])
    return s


@njit(**_JIT)
def _interpolate(cur, old, frac):
    """cur = old + frac·(cur − old), elementwise over any shape (flattened views)."""
    c = cur.reshape(-1)
    o = old.reshape(-1)
    f = F32(frac)
    for i in range(c.shape[0]):
        c[i] = (c[i] - o[i]) * f + o[i]


@njit(**_JIT)
def _transpose_into(dst, src):
    """dst = srcᵀ, writing dst row by row (measured faster than tiles for 100 × 784)."""
    m, n = src.shape
    for j in range(n):
        row = dst[j]
        for i in range(m):
            row[i] = src[i, j]


@njit(**_JIT)
def _relu_sum_min_max(a):
    """Sum (float64), min and max of relu(a) over a flat array."""
    lo = np.inf
    hi = -np.inf
    s0 = s1 = 0.0
    n2 = a.shape[0] - a.shape[0] % 2
    for i in range(0, n2, 2):  # two partial sums: a float64 add chain is latency-bound
        v0 = max(float(a[i]), 0.0)
        v1 = max(float(a[i + 1]), 0.0)
        s0 += v0
        s1 += v1
        lo = min(lo, v0, v1)
        hi = max(hi, v0, v1)
    for i in range(n2, a.shape[0]):
        v = max(float(a[i]), 0.0)
        s0 += v
        lo = min(lo, v)
        hi = max(hi, v)
    return s0 + s1, lo, hi


@njit(**_JIT)
def _lr_stats(aW, ab):
    """Mean, min and max of relu(α) over every rate (``LaMAML.lr_stats`` without a concatenated copy)."""
    total = 0.0
    lo = np.inf
    hi = -np.inf
    count = 0
    for l in range(len(aW)):
        for a in (aW[l].reshape(-1), ab[l]):
            s, a_lo, a_hi = _relu_sum_min_max(a)
            total += s
            lo = min(lo, a_lo)
            hi = max(hi, a_hi)
            count += a.shape[0]
    return total / count, lo, hi

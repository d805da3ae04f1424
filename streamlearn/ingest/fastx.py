"""The decoder's fast path: a message's feature array read straight from its bytes into float32.

The general path (``decode.py``) has orjson build 784 Python floats, converts them to float32 and
frees them: ~20 of a valid message's ~28 µs. Producers (``encode_example``) write ``x`` first, so
this path reads ``{"x":[n, n, ...],`` with a compiled scanner into the float32 array and leaves the
rest of the object, ``{`` + what follows the array, to orjson (~1 µs for the small keys).

It only ever *accepts*, and only what the general path accepts with the same numbers: anything it
is not sure of (another layout, a value that is not a strict JSON number, a length other than the
model's, a number it cannot convert exactly, float32 overflow, a later duplicate ``x`` key, a rest
orjson refuses) returns None, and the general path decides the message, with its reasons. The
split changes no verdict: ``{"x":[...], M}`` is valid JSON exactly when ``[...]`` is a valid array
and ``{M}`` a valid object.

Exact numbers. orjson reads a JSON number into the nearest double (an integer into an int, which
float32 conversion treats as the same double), and the general path then rounds that to float32.
The scanner takes up to 18 significant digits as an integer m and computes m × 10^e in doubles.
Where m ≤ 15 digits and 0 ≤ e ≤ 22, m and 10^e are exact and one multiplication rounds: exactly
orjson's double (Clinger's fast path). Otherwise the product is within ~2 units in the last place
of orjson's double, and the float32 is kept only if every double 8 units either side rounds to the
same float32 (``_float32_sure``): then orjson's does too. Only a number within 2**-49 (relative) of
the midpoint between two float32s falls back, a double that *is* such a midpoint among them (255 ×
a float32 often is; a float32 written as a double never is). An integer ``-0`` is the int 0 for
orjson, so +0.0 here too; ``-0.0`` is a float, -0.0.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

#: powers of ten as the nearest doubles (exact up to 10**22), and their inverses: decimal exponents
#: from -60 (a float32 rounds even 10**18 × 10**-60 to 0) to 40 (10**40 is past float32's range)
_POW10 = np.array([float(10**k) for k in range(41)], dtype=np.float64)
_INV_POW10 = np.array([float(f"1e-{k}") for k in range(61)], dtype=np.float64)


def _skip_blanks(buf: Any, i: int, n: int) -> int:  # pragma: no cover - compiled
    """The index of the first byte from ``i`` on that is not JSON whitespace (or ``n``)."""
    while i < n and buf[i] <= 0x20 and (buf[i] == 0x20 or buf[i] == 0x09 or buf[i] == 0x0A or buf[i] == 0x0D):
        i += 1
    return i


def _float32_sure(value: float, f: Any) -> bool:  # pragma: no cover - compiled
    """Whether every double within 8 units in the last place of ``value`` (>= 0) rounds to the
    float32 ``f`` that ``value`` rounds to (rounding is monotonic: checking both ends is enough);
    then so does the exactly rounded double, which is at most ~2 units away."""
    margin = value * 1.7763568394002505e-15  # 2**-49: 8 units in the last place, or more
    return np.float32(value - margin) == f and np.float32(value + margin) == f


def _scan(buf: Any, out: Any, pow10: Any, inv_pow10: Any) -> int:  # pragma: no cover - compiled
    """Read ``{"x":[...]`` from the start of ``buf`` into ``out`` (all of it, no more); where the
    rest of the object starts: the byte after the comma (a ``"`` must follow, after blanks) or the
    closing ``}``. -1: not this layout, or not sure (the general path decides)."""
    n = buf.shape[0]
    i = 0
    # {  "x"  :  [
    i = _skip_blanks(buf, i, n)
    if i + 4 > n or buf[i] != 0x7B:  # {
        return -1
    i += 1
    i = _skip_blanks(buf, i, n)
    if i + 3 > n or buf[i] != 0x22 or buf[i + 1] != 0x78 or buf[i + 2] != 0x22:  # "x"
        return -1
    i += 3
    i = _skip_blanks(buf, i, n)
    if i >= n or buf[i] != 0x3A:  # :
        return -1
    i += 1
    i = _skip_blanks(buf, i, n)
    if i >= n or buf[i] != 0x5B:  # [
        return -1
    i += 1
    want = out.shape[0]
    count = 0
    while True:
        i = _skip_blanks(buf, i, n)
        if i >= n or count >= want:  # more values than the model has inputs: wrong_length
            return -1
        # one JSON number: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?
        neg = buf[i] == 0x2D
        if neg:
            i += 1
            if i >= n:
                return -1
        c = buf[i]
        mant = 0
        sig = 0  # significant digits (from the first non-zero one)
        is_float = False
        if c == 0x30:  # 0: no digit may follow
            i += 1
            if i < n and 0x30 <= buf[i] <= 0x39:
                return -1
        elif 0x31 <= c <= 0x39:
            while i < n and 0x30 <= buf[i] <= 0x39:
                if sig < 19:
                    mant = mant * 10 + (buf[i] - 0x30)
                sig += 1
                i += 1
        else:
            return -1
        e10 = 0
        if sig > 18:
            return -1
        if i < n and buf[i] == 0x2E:  # .
            is_float = True
            i += 1
            start = i
            while i < n and 0x30 <= buf[i] <= 0x39:
                d = buf[i] - 0x30
                if sig > 0 or d != 0:
                    sig += 1
                    if sig > 18:
                        return -1
                    mant = mant * 10 + d
                e10 -= 1
                i += 1
            if i == start:
                return -1
        if i < n and (buf[i] == 0x65 or buf[i] == 0x45):  # e E
            is_float = True
            i += 1
            eneg = False
            if i < n and (buf[i] == 0x2B or buf[i] == 0x2D):
                eneg = buf[i] == 0x2D
                i += 1
            start = i
            ev = 0
            while i < n and 0x30 <= buf[i] <= 0x39:
                if ev < 100_000:
                    ev = ev * 10 + (buf[i] - 0x30)
                i += 1
            if i == start:
                return -1
            e10 += -ev if eneg else ev
        if e10 < -60 or e10 > 40:
            return -1
        # digits × 10^e10, then float32. Exactly the double orjson reads where the digits and the
        # power of ten are exact and one operation rounds (Clinger); otherwise (more digits, a
        # large power: multiplied by an inexact 10^k) within ~2 units in the last place of it,
        # which rounds to the same float32 unless _float32_sure says it may not.
        value = float(mant)
        if mant == 0:
            f = np.float32(0.0)
        elif sig <= 15 and -22 <= e10 <= 22:
            value = value * pow10[e10] if e10 >= 0 else value / pow10[-e10]
            f = np.float32(value)
        else:
            value = value * pow10[e10] if e10 >= 0 else value * inv_pow10[-e10]
            f = np.float32(value)
            if not _float32_sure(value, f):
                return -1
        if not np.isfinite(f):  # beyond float32: non_finite, named by the general path
            return -1
        if neg and (is_float or mant != 0):  # an integer -0 is the int 0: +0.0
            f = -f
        out[count] = f
        count += 1
        i = _skip_blanks(buf, i, n)
        if i >= n:
            return -1
        if buf[i] == 0x2C:  # ,
            i += 1
            continue
        if buf[i] != 0x5D:  # ]
            return -1
        break
    if count != want:
        return -1
    i += 1
    i = _skip_blanks(buf, i, n)
    if i >= n:
        return -1
    if buf[i] == 0x7D:  # }: x was the only key
        return i
    if buf[i] != 0x2C:
        return -1
    i += 1
    j = i  # a key must follow: "{" + "}" would hide a trailing comma
    j = _skip_blanks(buf, i, n)
    if j >= n or buf[j] != 0x22:
        return -1
    return i


def _scan_many(
    buf: Any, starts: Any, stops: Any, out: Any, rests: Any, pow10: Any, inv_pow10: Any
) -> None:  # pragma: no cover - compiled
    """``_scan`` of each message ``buf[starts[k]:stops[k]]`` into ``out[k]``; its result in ``rests[k]``."""
    for k in range(starts.shape[0]):
        rests[k] = _scan(buf[starts[k] : stops[k]], out[k], pow10, inv_pow10)


_scan_compiled: Callable[..., int] | None = None
_scan_many_compiled: Callable[..., None] | None = None
_loaded = False
_loading = threading.Lock()


def _load() -> Callable[..., int] | None:
    """Compile the scanner (or load it from numba's cache) on first use: numba and the learners'
    cache setting (``compiled_jit``) are imported only then, not by whatever imports the decoder.
    None where numba does not import: the general path decides every message."""
    global _scan_compiled, _scan_many_compiled, _loaded, _skip_blanks, _float32_sure, _scan
    with _loading:
        if not _loaded:
            try:  # numba is a dependency, but the general path must work where it does not import
                from numba import njit

                from streamlearn.learners.compiled_jit import _JIT
            except ImportError:  # pragma: no cover - exercised only without numba
                _loaded = True
                return None
            # _scan calls the module's globals at compile time: compile the helpers first
            _skip_blanks = njit(**_JIT)(_skip_blanks)
            _float32_sure = njit(**_JIT)(_float32_sure)
            _scan_compiled = _scan = njit(**_JIT)(_scan)  # _scan_many calls it: compiled first too
            _scan_many_compiled = njit(**_JIT)(_scan_many)
            _loaded = True
    return _scan_compiled


def available() -> bool:
    """Whether the compiled scanner is there (numba imports)."""
    return (_scan_compiled if _loaded else _load()) is not None


def parse_fast(raw: bytes, n_inputs: int) -> tuple[dict[str, Any], np.ndarray] | None:
    """(the message's other keys, x as float32) if ``raw`` takes the fast path, else None.

    ``raw``: a message's bytes, byte-order mark removed, within the size limit."""
    scan = _scan_compiled if _loaded else _load()
    if scan is None:
        return None
    x = np.empty(n_inputs, dtype=np.float32)
    return fast_rest(raw, x, scan(np.frombuffer(raw, dtype=np.uint8), x, _POW10, _INV_POW10))


def fast_rest(raw: bytes, x: np.ndarray, rest: int) -> tuple[dict[str, Any], np.ndarray] | None:
    """What ``parse_fast`` returns once the scanner read ``x`` and said where the rest starts."""
    if rest < 0:
        return None
    try:
        doc = orjson.loads(b"{" + raw[rest:])
    except orjson.JSONDecodeError:
        return None
    if "x" in doc:  # a second x: the general path reads the object as orjson does
        return None
    return doc, x


def scan_many(raws: list[bytes], n_inputs: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The scanner over many messages in one compiled call, which releases the GIL once instead of
    once a message (``parse_ahead.py``): their ``x`` rows (n, n_inputs) and where each one's rest
    starts (< 0: the general path decides it; ``fast_rest`` finishes the others). None without
    numba. ``raws`` as ``parse_fast`` takes them: byte-order mark removed, within the size limit."""
    if not _loaded:
        _load()
    scan = _scan_many_compiled
    if scan is None:
        return None
    sizes = np.fromiter(map(len, raws), dtype=np.int64, count=len(raws))
    stops = np.cumsum(sizes)
    out = np.empty((len(raws), n_inputs), dtype=np.float32)
    rests = np.empty(len(raws), dtype=np.int64)
    scan(np.frombuffer(b"".join(raws), dtype=np.uint8), stops - sizes, stops, out, rests, _POW10, _INV_POW10)
    return out, rests

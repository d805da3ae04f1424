"""The Open Inference Protocol's binary tensor data extension (what ``tritonclient.http`` sends).

A request or response body is a JSON header followed by raw tensor bytes; the
``Inference-Header-Content-Length`` header says where the JSON ends. A tensor whose
``parameters`` hold ``"binary_data_size": N`` has no ``data``: its values are the next N bytes
after the JSON, little-endian, row-major, no padding (BYTES: each element a 4-byte little-endian
length, then its bytes). An output comes back binary when its request entry says
``"parameters": {"binary_data": true}``, or when the request's own parameters say
``"binary_data_output": true`` (tritonclient's default when it names no outputs).

A malformed request raises ``ValueError`` with what is wrong (``api.py`` answers it with 400).

>>> json_part, raw = split(b'{"a":1}' + bytes(4), "7")
>>> json_part, len(raw)
(b'{"a":1}', 4)
>>> encode("BYTES", ["ab", "c"])
b'\\x02\\x00\\x00\\x00ab\\x01\\x00\\x00\\x00c'
"""

from __future__ import annotations

from typing import Any

import numpy as np

HEADER = "Inference-Header-Content-Length"
#: little-endian dtypes of the input datatypes accepted
INPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}


def split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a request body; all JSON when the header is absent."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > len(body):
        raise ValueError(f"bad {HEADER} {header_length!r}: not a byte count within the body")
    n = int(text)
    return body[:n], body[n:]


def input_values(tensor: dict[str, Any], binary: bytes, datatype: str, count: int) -> np.ndarray | None:
    """The input's values from the binary tail (1-D, its own dtype); None when it has JSON data."""
    params = tensor.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise ValueError('input "parameters" must be an object')
    size = (params or {}).get("binary_data_size")
    if size is None:
        if binary:
            raise ValueError(
                f'{len(binary)} bytes after the JSON header, but no input has "binary_data_size"'
            )
        return None
    if "data" in tensor:
        raise ValueError('an input has either "data" or "binary_data_size", not both')
    dtype = INPUT_DTYPES[datatype]
    need = count * dtype.itemsize
    if type(size) is not int or size != need:
        raise ValueError(f'"binary_data_size" is {size!r}; {count} {datatype} values take {need} bytes')
    if len(binary) != size:
        raise ValueError(f'{len(binary)} bytes after the JSON header; "binary_data_size" says {size}')
    return np.frombuffer(binary, dtype=dtype)


def wanted_binary(doc: dict[str, Any], outputs: list[Any] | None, names: tuple[str, ...]) -> frozenset[str]:
    """The names of the outputs the request wants as binary data."""
    params = doc.get("parameters")
    default = isinstance(params, dict) and params.get("binary_data_output") is True
    if outputs is None:
        return frozenset(names) if default else frozenset()
    chosen = set()
    for o in outputs:
        p = o.get("parameters")
        flag = p.get("binary_data", default) if isinstance(p, dict) else default
        if flag is True:
            chosen.add(o["name"])
    return frozenset(chosen)


def encode(datatype: str, values: Any) -> bytes:
    """An output's values as binary tensor data."""
    if datatype == "BYTES":
        out = bytearray()
        for v in values:
            raw = str(v).encode()
            out += len(raw).to_bytes(4, "little") + raw
        return bytes(out)
    dtype = {"FP32": "<f4", "INT64": "<i8"}[datatype]
    return np.ascontiguousarray(values, dtype=dtype).tobytes()

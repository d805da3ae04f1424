"""The decoder's fast path (``ingest/fastx.py``) decides exactly as the general path, bit for bit."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from streamlearn.ingest import decode as decode_mod
from streamlearn.ingest import fastx
from streamlearn.ingest.decode import Decoder, Example, Parsed, Rejection
from streamlearn.ingest.labels import LabelMap, TaskMap
from streamlearn.produce import encode

pytestmark = pytest.mark.skipif(not fastx.available(), reason="numba does not import here")


def _general(raw: bytes, n: int) -> Example | Rejection:
    """What the decoder says without the fast path (the general path alone)."""
    saved = decode_mod.parse_fast
    decode_mod.parse_fast = lambda raw, n: None
    try:
        return Decoder(n, LabelMap(10), TaskMap()).decode(raw)
    finally:
        decode_mod.parse_fast = saved


def _same(raw: bytes, n: int) -> bool:
    """Fast and general path agree on ``raw``; True if the fast path took it."""
    fast, general = Decoder(n, LabelMap(10), TaskMap()).decode(raw), _general(raw, n)
    assert type(fast) is type(general), (raw[:80], fast, general)
    if isinstance(general, Rejection):
        assert isinstance(fast, Rejection) and (fast.reason, fast.detail) == (general.reason, general.detail)
    else:
        assert isinstance(fast, Example)
        assert fast.x.dtype == np.float32 and general.x.dtype == np.float32
        # bit for bit: -0.0 is not 0.0 here
        bits, want = fast.x.view(np.uint32), general.x.view(np.uint32)
        np.testing.assert_array_equal(bits, want, err_msg=str(raw[:80]))
        assert (fast.y, fast.label, fast.task, fast.id, fast.ts) == (
            general.y,
            general.label,
            general.task,
            general.id,
            general.ts,
        )
    text = raw.removeprefix(b"\xef\xbb\xbf")
    return fastx.parse_fast(text, n) is not None


def test_the_producers_messages_take_the_fast_path() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        # float32 features written as doubles, up to 17 digits (produce.encode); a double that is
        # exactly a float32 midpoint (255 * a float32 often is) is the general path's to round
        x = (rng.random(784, dtype=np.float32) * rng.choice([1e-3, 1, 255])).astype(np.float32)
        raw = encode({"x": [float(v) for v in x], "y": 3, "task": 1, "id": "a"})
        assert _same(raw, 784)
        fast = fastx.parse_fast(raw, 784)
        assert fast is not None and fast[0] == {"y": 3, "task": 1, "id": "a"}
        np.testing.assert_array_equal(fast[1], x)


NUMBERS = [
    "0", "-0", "0.0", "-0.0", "1", "-1", "3", "12345678901234567", "123456789012345678",
    "1234567890123456789", "99999999999999999999", "0.1", "-0.1", "1e5", "1E5", "1e+5", "1e-5",
    "-1.5e-7", "1.0e22", "1e23", "1e-22", "1e-23", "0e0", "0e99", "-0e0", "3.4028234663852886e38",
    "3.4028235e38", "3.4028236e38", "1e39", "1.401298464324817e-45", "7e-46", "1.17549435e-38",
    "0.007843137718737125", "0.30000001192092896", "0.1000000000000000055511151231257827",
    "16777217", "16777216.5", "33554434", "0.000000000000000000001", "01", "1.", ".5", "+1",
    "1e", "1e+", "-", "--1", "1.e5", "0x10", "NaN", "Infinity", "-Infinity", "1_0", "1 2",
    "true", "false", "null", '"1"', "[1]", "{}",
]  # fmt: skip


@pytest.mark.parametrize("number", NUMBERS)
def test_every_number_form_decides_as_the_general_path(number: str) -> None:
    for raw in (
        f'{{"x":[{number},2],"y":1}}',
        f'{{"x":[2,{number}],"y":1}}',
        f'{{"x":[{number},{number}]}}',
        f' {{ "x" : [ {number} , 0.5 ] , "y" : 1 }} ',
    ):
        _same(raw.encode(), 2)


def test_float32_midpoints_and_their_neighbours_are_exact() -> None:
    """Decimals on or next to the line between two float32s: the double rounding must match."""
    rng = np.random.default_rng(1)
    lows = rng.random(300, dtype=np.float32) * np.float32(10.0) ** rng.integers(-8, 8, 300)
    for low in lows.astype(np.float32):
        high = np.nextafter(low, np.float32(np.inf))
        mid = (float(low) + float(high)) / 2  # exact in a double
        for value in (mid, np.nextafter(mid, 0.0), np.nextafter(mid, np.inf)):
            for text in (repr(float(value)), f"{value:.17e}", f"{value:.20g}", f"{value:.9g}"):
                _same(f'{{"x":[{text}],"y":0}}'.encode(), 1)


def test_random_forms_decide_as_the_general_path() -> None:
    rng = random.Random(2)
    taken = 0
    for _ in range(3000):
        v = rng.choice([rng.random(), rng.uniform(-1e6, 1e6), rng.random() * 10.0 ** rng.randint(-40, 40)])
        forms = [repr(v), f"{v:.{rng.randint(1, 20)}g}", f"{v:.{rng.randint(0, 12)}e}", str(int(v))]
        text = rng.choice(forms)
        if rng.random() < 0.3:
            text = text.upper()
        taken += _same(f'{{"x":[0.5,{text},-2],"y":1}}'.encode(), 3)
    assert taken > 2500  # the forms producers use mostly take the fast path


@pytest.mark.parametrize(
    "raw",
    [
        b'{"x":[1,2],"y":1,"x":[3,4]}',  # a second x: orjson keeps the last one
        b'{"x":[1,2],"y":1,"x":[3]}',
        b'{"x":[1,2],}',  # a trailing comma
        b'{"x":[1,2],"y":1,}',
        b'{"x":[1,2]',  # no closing brace
        b'{"x":[1,2]} x',  # garbage after the object
        b'{"x":[1,2]}  \n',
        b'{"x":[1,2],"y":1}',
        b'{"x":[1,2],"y":true}',
        b'{"x":[1,2],"y":1,"id":"\\"x\\":[5,6]"}',
        b'{"x":[1,2],"y":1,"ts":-1}',
        b'{"x":[1,2],"y":"\xff"}',  # not UTF-8 in the rest
        b'{"x":[1,2,3],"y":1}',  # wrong length, both ways
        b'{"x":[1],"y":1}',
        b'{"x":[],"y":1}',
        b'{"x":[1,true],"y":1}',
        b'{"x":[1,[2]],"y":1}',
        b'{"x":[1,2]"y":1}',
        b'{"x" :[1,2],"y":1}',
        b'{"\\u0078":[1,2],"y":1}',  # an escaped key: the general path's
        b'{"y":1,"x":[1,2]}',  # x later: the general path's
        b'\xef\xbb\xbf{"x":[1,2],"y":1}',
        b'[{"x":[1,2],"y":1}]',
        b'{"x":[1,2],"y":1,"task":"a","id":"i","ts":5}',
    ],
)
def test_layouts_decide_as_the_general_path(raw: bytes) -> None:
    _same(raw, 2)


def test_a_second_x_is_left_to_the_general_path() -> None:
    raw = b'{"x":[1,2],"y":1,"x":[3,4]}'
    assert fastx.parse_fast(raw, 2) is None
    ex = Decoder(2, LabelMap(10), TaskMap()).decode(raw)
    assert isinstance(ex, Example) and ex.x.tolist() == [3.0, 4.0] == orjson.loads(raw)["x"]


LAYOUTS = test_layouts_decide_as_the_general_path.pytestmark[0].args[1]  # the cases above


def test_parse_many_is_parse_one_by_one() -> None:
    """One compiled scan of a whole batch (what the parse-ahead worker runs) gives each message
    exactly what ``parse`` gives it alone: verdict, reason, keys and x bit for bit, in order, the
    fast path's messages, the general path's and the refused mixed together."""
    rng = random.Random(5)
    raws: list[object] = [*LAYOUTS, None, b"", b"\xef\xbb\xbf", "a str", bytearray(b'{"x":[1,2],"y":1}')]
    raws += [f'{{"x":[{n},2],"y":1}}'.encode() for n in NUMBERS]
    raws += [
        f'{{"x":[0.5,{rng.random() * 10.0 ** rng.randint(-40, 40)!r}],"y":1}}'.encode() for _ in range(300)
    ]
    raws.append(b'{"x":[1,2],"y":1,"pad":"' + b"a" * 2000 + b'"}')  # over max_bytes below
    rng.shuffle(raws)
    dec = Decoder(2, LabelMap(10), TaskMap(), max_bytes=1000)
    scans: list[int] = []

    def scan_many(batch: list[bytes], n: int) -> tuple[np.ndarray, np.ndarray] | None:
        scans.append(len(batch))
        return fastx.scan_many(batch, n)

    saved, decode_mod.scan_many = decode_mod.scan_many, scan_many
    try:
        many = dec.parse_many(raws)
    finally:
        decode_mod.scan_many = saved
    one = [dec.parse(raw) for raw in raws]
    assert scans == [len(raws) - 5]  # one scan, of every message that passed the byte checks
    assert len(many) == len(one) == len(raws)
    fast = 0
    for raw, a, b in zip(raws, many, one, strict=True):
        assert type(a) is type(b), (raw, a, b)
        if isinstance(b, Rejection):
            assert (a.reason, a.detail) == (b.reason, b.detail), raw  # type: ignore[union-attr]
        else:
            assert a.doc == b.doc, raw  # type: ignore[union-attr]
            np.testing.assert_array_equal(a.x.view(np.uint32), b.x.view(np.uint32), err_msg=str(raw))  # type: ignore[union-attr]
            fast += isinstance(raw, bytes) and fastx.parse_fast(raw, 2) is not None
    assert fast > 250  # most took the fast path, so the batch scan decided them
    assert dec.parse_many([]) == []


def test_parse_many_parses_one_by_one_if_the_batch_scan_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the batch scan costs speed, not messages: every message is then parsed alone."""
    raws: list[object] = [b'{"x":[1,2],"y":1}', b"not json", None, b'{"x":[0.25,-3e5],"y":2,"task":"a"}']
    dec = Decoder(2, LabelMap(10), TaskMap())

    def broken(batch: list[bytes], n: int) -> None:
        raise IndexError("a bug in the batch scanner")

    monkeypatch.setattr(decode_mod, "scan_many", broken)
    many = dec.parse_many(raws)
    one = [dec.parse(raw) for raw in raws]
    assert [type(r) for r in many] == [type(r) for r in one] == [Parsed, Rejection, Rejection, Parsed]
    for a, b in zip(many, one, strict=True):
        if isinstance(b, Rejection):
            assert a == b
        else:
            assert isinstance(a, Parsed) and a.doc == b.doc
            np.testing.assert_array_equal(a.x, b.x)

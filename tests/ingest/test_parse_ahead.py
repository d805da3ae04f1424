"""ParseAhead: the worker's results are exactly what parsing on the caller's thread gives, and
only ever for the very record they were computed from."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest

from streamlearn.ingest.decode import Decoder, Parsed, Rejection, encode_example
from streamlearn.ingest.labels import LabelMap, TaskMap
from streamlearn.ingest.parse_ahead import ParseAhead


@dataclass(eq=False)
class Record:
    """What ParseAhead reads of a kafka-python ConsumerRecord: its value (and its identity)."""

    offset: int
    value: bytes | None


def _decoder() -> Decoder:
    return Decoder(3, LabelMap(10), TaskMap())


def _same(a: Parsed | Rejection, b: Parsed | Rejection) -> bool:
    if isinstance(a, Rejection) or isinstance(b, Rejection):
        return a == b
    return a.doc == b.doc and np.array_equal(a.x, b.x)


def _records(values: list[float], first: int = 0) -> list[Record]:
    recs = [Record(first + i, encode_example([v, v, v], y=i % 3)) for i, v in enumerate(values)]
    recs.append(Record(first + len(values), b"not json"))
    recs.append(Record(first + len(values) + 1, None))
    return recs


def _wait_parsed(ahead: ParseAhead, n: int) -> None:
    """Until the worker has results for n records of its job (it is fast; 10 s is generous)."""
    deadline = time.monotonic() + 10
    while ahead._job is not None and len(ahead._job.results) < n and time.monotonic() < deadline:
        time.sleep(0.001)


@pytest.mark.parametrize("batch", [False, True], ids=["one by one", "parse_many"])
def test_the_workers_results_equal_parsing_here(batch: bool) -> None:
    dec = _decoder()
    ahead = ParseAhead(dec.parse, dec.parse_many if batch else None)
    try:
        recs = _records([0.5, -1.25, 3.0, 1e-7])
        ahead.submit(recs)
        _wait_parsed(ahead, len(recs))
        out = ahead.parse_all(recs)
        assert ahead.hits == len(recs) and ahead.misses == 0  # all from the worker
        assert all(_same(a, dec.parse(r.value)) for a, r in zip(out, recs, strict=True))
        assert isinstance(out[-2], Rejection) and out[-2].reason == "not_json"
        assert isinstance(out[-1], Rejection) and out[-1].reason == "empty"
    finally:
        ahead.close()


def test_records_read_again_after_a_seek_are_parsed_from_their_own_bytes() -> None:
    """Same offsets, other bytes (a seek back over a recreated topic): no result is reused."""
    dec = _decoder()
    ahead = ParseAhead(dec.parse)
    try:
        old = _records([1.0, 2.0, 3.0])
        ahead.submit(old)
        _wait_parsed(ahead, len(old))
        new = _records([7.0, 8.0, 9.0])  # equal offsets, new record objects, other values
        out = ahead.parse_all(new)
        assert ahead.hits == 0 and ahead.misses == len(new)
        xs = [p.x.tolist() for p in out if isinstance(p, Parsed)]
        assert xs == [[7.0] * 3, [8.0] * 3, [9.0] * 3]
        # a record not submitted, mixed with submitted ones: each gets its own result
        ahead.submit(old)
        _wait_parsed(ahead, len(old))
        mixed = [old[0], new[1], old[2]]
        out = ahead.parse_all(mixed)
        assert [p.x[0] for p in out if isinstance(p, Parsed)] == [1.0, 8.0, 3.0]
    finally:
        ahead.close()


def test_close_stops_the_worker_and_a_later_submit_starts_another() -> None:
    ahead = ParseAhead(_decoder().parse)
    recs = _records([1.0])
    ahead.submit(recs)
    thread = ahead._thread
    assert thread is not None and thread.is_alive()
    ahead.close()
    assert not thread.is_alive()
    assert [type(p) for p in ahead.parse_all(recs)] == [Parsed, Rejection, Rejection]  # parsed here
    ahead.submit(recs)
    assert ahead._thread is not None and ahead._thread.is_alive()
    ahead.close()
    ahead.close()  # idempotent

"""Parse the next poll's messages on a second thread while the daemon learns the current ones.

:meth:`Decoder.parse <streamlearn.ingest.decode.Decoder.parse>` is a function of a message's bytes
alone (it reads no label or task map), and its costly part, the compiled scanner of ``x``
(``fastx.py``), releases the GIL. So while the daemon's thread learns one poll's examples, a worker
parses the records the source has already drained for the next poll; the daemon's thread then only
finishes them (labels, tasks, in stream order) — what it would have computed itself, computed
earlier.

Nothing else moves: the daemon's thread still owns the consumer (kafka-python's is not thread-safe),
takes every record in offset order and decides where each one ends (learned, pending or
dead-lettered), so offsets, checkpoints, seeks and resets are exactly as without it. A result is
used only for the very record object it was computed from; a record the worker has not reached (or
one read after a seek or reset dropped what was drained) is parsed on the daemon's thread, as
before. A crash loses nothing: a parsed result is no state, only a cache.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from streamlearn.ingest.decode import Parsed, Rejection

log = logging.getLogger(__name__)


class _Job:
    """Records to parse ahead, and the results so far (record, result) by ``id(record)``."""

    __slots__ = ("cancelled", "records", "results")

    def __init__(self, records: Sequence[Any]) -> None:
        self.records = records
        self.results: dict[int, tuple[Any, Parsed | Rejection]] = {}
        self.cancelled = False


class ParseAhead:
    """One worker thread that parses the records handed to :meth:`submit`, one job at a time.

    ``parse`` must be a pure function of the record's value and never raise (``Decoder.parse``).
    The worker starts with the first job after construction or :meth:`close`, and ends with
    :meth:`close` (idempotent).
    """

    def __init__(
        self,
        parse: Callable[[Any], Parsed | Rejection],
        parse_many: Callable[[list[Any]], list[Parsed | Rejection]] | None = None,
    ) -> None:
        self._parse = parse
        # The worker's way: all of a job's values in one call (Decoder.parse_many: one compiled scan,
        # so one release of the GIL a job instead of one a record); else ``parse`` one by one.
        self._parse_many = parse_many
        self._jobs: deque[_Job | None] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._job: _Job | None = None  # the last job submitted
        #: records whose parse result came from the worker / was computed on the caller's thread
        self.hits = 0
        self.misses = 0

    def submit(self, records: Sequence[Any]) -> None:
        """Parse these records ahead (the previous job, if still running, is abandoned)."""
        if not records:
            return
        if self._thread is None or not self._thread.is_alive():  # first job, or the worker died
            with self._ready:
                self._jobs.clear()
            self._thread = threading.Thread(target=self._work, name="streamlearn-parse-ahead", daemon=True)
            self._thread.start()
        if self._job is not None:
            self._job.cancelled = True
        job = self._job = _Job(records)
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()

    def parse_all(self, records: Sequence[Any]) -> list[Parsed | Rejection]:
        """``parse(record.value)`` for each record: the worker's result where it has one for this
        very record, else computed here."""
        job, parse = self._job, self._parse
        results: dict[int, tuple[Any, Parsed | Rejection]] = {}
        if job is not None:
            job.cancelled = True  # what it has not reached yet is parsed here
            results = job.results
        out = []
        hits = 0
        for rec in records:
            done = results.get(id(rec))
            if done is not None and done[0] is rec:
                out.append(done[1])
                hits += 1
            else:
                out.append(parse(rec.value))
        self.hits += hits
        self.misses += len(records) - hits
        return out

    def close(self) -> None:
        """Stop the worker (it finishes the record it is on) and wait for it; drop all results."""
        thread, self._thread = self._thread, None
        if self._job is not None:
            self._job.cancelled = True
            self._job = None
        if thread is None:
            return
        with self._ready:
            self._jobs.append(None)
            self._ready.notify()
        thread.join(timeout=10)

    def _work(self) -> None:
        parse = self._parse
        while True:
            with self._ready:
                while not self._jobs:
                    self._ready.wait()
                job = self._jobs.popleft()
            if job is None:
                return
            results = job.results
            if self._parse_many is not None and not job.cancelled:
                # The GIL changes hands at every release: one batch takes it back a few times a job
                # instead of twice a record. SGD's torch steps release it between every op, and
                # those trades cost it several % of its speed (daemon/learner 0.86 -> 0.88).
                parsed = self._parse_many([rec.value for rec in job.records])
                results.update((id(rec), (rec, p)) for rec, p in zip(job.records, parsed, strict=True))
                continue
            for rec in job.records:
                if job.cancelled:
                    break
                results[id(rec)] = (rec, parse(rec.value))

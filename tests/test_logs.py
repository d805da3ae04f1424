"""kafka-python's repeated messages are limited; everything else passes untouched."""

from __future__ import annotations

import logging

from streamlearn.logs import RepeatLimiter


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeats_of_a_kafka_message_pass_once_per_window_with_a_count(monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("streamlearn.logs.time.monotonic", lambda: clock[0])
    f = RepeatLimiter(every_s=60.0)
    first = record("kafka.net.manager", "Connection failed: %s", "ECONNREFUSED")
    assert f.filter(first) and first.getMessage() == "Connection failed: ECONNREFUSED"
    passed = [f.filter(record("kafka.net.manager", "Connection failed: %s", i)) for i in range(30)]
    assert not any(passed)
    assert f.filter(record("kafka.cluster", "Connection failed: %s", 1))  # another logger: its own count
    assert f.filter(record("kafka.net.manager", "Metadata refresh failed"))  # another message too
    assert f.filter(record("streamlearn.daemon", "checkpoint failed"))
    assert all(f.filter(record("streamlearn.daemon", "checkpoint failed")) for _ in range(5))  # ours: all

    clock[0] += 61
    later = record("kafka.net.manager", "Connection failed: %s", "ECONNREFUSED")
    assert f.filter(later)
    assert later.getMessage() == "Connection failed: ECONNREFUSED [and 30 more like this in the last 61 s]"
    assert not f.filter(record("kafka.net.manager", "Connection failed: %s", "x"))


def test_status_line_and_log_records_from_many_threads_never_share_a_row() -> None:
    import doctest
    import io
    import threading

    from streamlearn import console, logs
    from tests.integration.test_terminal import replay

    assert doctest.testmod(logs).failed == 0 and doctest.testmod(console).failed == 0
    out = io.StringIO()
    status = logs.StatusLine(out, tty=True, width=60)
    logger = logging.getLogger("test.statusline")
    logger.propagate = False
    handler = logs.StatusLineHandler(status)
    logger.addHandler(handler)
    try:

        def talk(n: int) -> None:
            for i in range(200):
                logger.warning("thread %d line %d", n, i)

        def progress() -> None:
            for i in range(500):
                status.set(f"[demo] learned {i} " + "x" * 100)  # longer than the terminal: cut

        threads = [threading.Thread(target=talk, args=(n,)) for n in range(4)]
        threads.append(threading.Thread(target=progress))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status.clear()
    finally:
        logger.removeHandler(handler)
    history, erased = replay(out.getvalue())
    assert sorted(history) == sorted(f"thread {n} line {i}" for n in range(4) for i in range(200))
    assert erased and all(e.startswith("[demo] learned ") and len(e) <= 59 for e in erased)


def test_off_a_terminal_the_status_line_is_not_drawn() -> None:
    import io

    from streamlearn.logs import StatusLine

    out = io.StringIO()  # not a TTY
    status = StatusLine(out)
    status.set("[demo] learned 1")
    status.write_above("a log line")
    status.clear()
    assert out.getvalue() == "a log line\n"


def test_a_signal_handler_that_logs_while_a_line_is_being_written_does_not_hang() -> None:
    """Ctrl-C's handler logs "received SIGINT" in the main thread, which may be inside
    write_above at that moment (it hung the demo's Ctrl-C test): the write must go through."""
    import io
    import threading

    from streamlearn import logs

    class Interrupting(io.StringIO):
        """A stream whose first write runs a 'signal handler' that writes a log line too."""

        def __init__(self, status_of: list[logs.StatusLine]) -> None:
            super().__init__()
            self.status_of, self.fired = status_of, False

        def write(self, s: str) -> int:
            if not self.fired:
                self.fired = True
                self.status_of[0].write_above("received SIGINT")
            return super().write(s)

    holder: list[logs.StatusLine] = []
    out = Interrupting(holder)
    holder.append(logs.StatusLine(out, tty=False))
    writer = threading.Thread(target=holder[0].write_above, args=("learned 200",), daemon=True)
    writer.start()
    writer.join(timeout=10)
    assert not writer.is_alive(), "write_above deadlocked on its own lock"
    assert out.getvalue() == "received SIGINT\nlearned 200\n"

"""The clock of the daemon loop's periodic jobs."""

from __future__ import annotations

from streamlearn.runtime import Every


def test_every_is_due_once_per_period_and_restarts_when_due() -> None:
    clock = Every(1.0, start=100.0)
    assert [clock.due(t) for t in (100.5, 101.0, 101.5, 101.9, 102.0)] == [False, True, False, False, True]


def test_a_late_pass_delays_the_next_run_instead_of_queueing_them() -> None:
    clock = Every(1.0, start=0.0)
    assert clock.due(5.0)  # five periods late: one run
    assert not clock.due(5.5)


def test_every_count_or_seconds_whichever_comes_first() -> None:
    ckpt = Every(30.0, every_count=500, start=0.0, count=1000)
    assert not ckpt.due(10.0, count=1499)
    assert ckpt.due(11.0, count=1500)  # by count: the clock restarts at 11 s too
    assert not ckpt.due(40.0, count=1600)
    assert ckpt.due(41.0, count=1600)  # by time


def test_restart_counts_the_period_from_a_run_for_another_reason() -> None:
    ckpt = Every(30.0, every_count=500, start=0.0)
    ckpt.restart(25.0, count=400)  # e.g. a checkpoint an admin asked for
    assert not ckpt.due(31.0, count=899)
    assert ckpt.due(55.0, count=899)

"""Process-wide runtime helpers of the daemon: thread pinning, child processes that die with us,
and the clock of the loop's periodic jobs."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import torch
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)


def pin_threads(n: int = 1) -> None:
    """Limit torch and BLAS to ``n`` threads.

    The learners' steps are tiny matrix products; more threads only add synchronisation, and on
    a 2-core machine shared with a broker and an HTTP server they make the loop several times
    slower (DESIGN.md §9).
    """
    torch.set_num_threads(n)
    # threadpool_limits reaches only the BLAS libraries already loaded. scipy's own OpenBLAS, which
    # the compiled (numba) kernels' np.dot calls into, loads with scipy: load it first, or it keeps
    # its default threads (La-MAML compiled ran at 106 instead of 1733 examples/s that way).
    with contextlib.suppress(ImportError):
        import scipy.linalg.blas  # noqa: F401
    threadpool_limits(limits=n)
    log.debug("pinned torch and BLAS to %d thread(s)", n)


PR_SET_PDEATHSIG = 1


def die_with_parent_hook() -> Callable[[], None] | None:
    """preexec_fn asking Linux to SIGKILL the child (broker, server) when our process dies, even by SIGKILL.

    atexit and __del__ do not run on SIGKILL or os._exit; this does. libc is resolved here, before the
    fork, so the child only makes one C call. Caveat: the signal follows the *thread* that forked, so
    start the child from a thread that lives as long as it should (the main thread, normally).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # The parent may have died between fork() and prctl(); then nobody would ever stop us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return hook


class Every:
    """Due once every ``seconds`` (monotonic), or once ``count`` has grown by ``every_count`` if given.

    The daemon's loop asks each periodic job's clock once per pass; ``due`` restarts the clock when
    it answers True, so a slow pass delays the next run instead of queueing several.

    >>> clock = Every(2.0, start=10.0)
    >>> clock.due(11.0), clock.due(12.0), clock.due(13.0)
    (False, True, False)
    >>> ckpt = Every(60.0, every_count=500, start=0.0)
    >>> ckpt.due(1.0, count=499), ckpt.due(2.0, count=500), ckpt.due(3.0, count=999)
    (False, True, False)
    """

    def __init__(
        self, seconds: float, *, every_count: int | None = None, start: float | None = None, count: int = 0
    ) -> None:
        self.seconds = seconds
        self.every_count = every_count
        self.restart(time.monotonic() if start is None else start, count)

    def due(self, now: float, count: int = 0) -> bool:
        if now - self._last >= self.seconds or (
            self.every_count is not None and count - self._last_count >= self.every_count
        ):
            self.restart(now, count)
            return True
        return False

    def restart(self, now: float, count: int = 0) -> None:
        """Count the period from ``now`` (and ``count``): the job just ran for another reason."""
        self._last = now
        self._last_count = count

"""Process-wide runtime settings that decide the speed of the inner loops."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
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

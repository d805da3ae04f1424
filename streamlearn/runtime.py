"""Process-wide runtime settings that decide the speed of the inner loops."""

from __future__ import annotations

import logging

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

"""Leadership among identical ``streamlearn run`` processes: one active learner, the others standbys.

With ``fleet.enabled`` every process first waits as a **standby**: it serves predictions from the
newest checkpoint exactly like ``streamlearn serve`` (same port, hot reload, role ``standby`` in
``/v2/health/ready`` and ``streamlearn_role``) while it watches the lease (``streamlearn.fleet.lease``).
The one that acquires it becomes the **active**: it stops its replica server, restores the newest
checkpoint and resumes from its offsets — the daemon's ordinary start.

Fencing. Acquiring yields a leadership *epoch*, one more than any before it and than any epoch in
the checkpoint names; the active writes it into each checkpoint's name and the store orders
checkpoints by epoch first, so nothing a deposed active writes can win over its successor's. The
new active writes a *takeover* checkpoint at its epoch before it learns anything (``Daemon._run``),
so from then on even a checkpoint its predecessor had in flight when it was paused loses. On top:

- a checkpoint is published only while the lease was confirmed less than ``SAFE_FRACTION`` of
  ``lease_seconds`` ago (a standby needs a full ``lease_seconds`` to take over);
- offsets are committed only right after one more conditional renewal succeeded — and in a fleet
  the group's committed offsets are never read back (``delivery.resume(group_commit=False)``):
  learners resume from the checkpoint's offsets only, so a commit that lands late (a process paused
  between that renewal and its commit) changes nothing but what monitoring tools show;
- a renewal refused by the store (the lease was taken over) deposes the process: it stops learning
  without its final checkpoint or commit, drops its model and becomes a standby again
  (``streamlearn.fleet.member``), able to take over later like any other.

Renewals run in their own thread every fifth of ``lease_seconds``; a store that cannot be reached
never stops learning (only checkpoints and commits wait), and a standby that cannot read the lease
does not count the time as expiry.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import Config
from streamlearn.errors import StreamlearnError
from streamlearn.fleet.lease import Lease, open_lease
from streamlearn.logs import Throttled

if TYPE_CHECKING:
    from streamlearn.serving.replica import ReplicaServer

log = logging.getLogger(__name__)

#: publish checkpoints only while the last confirmation is younger than this fraction of the lease
SAFE_FRACTION = 0.8
#: the active renews this many times per lease period
RENEWALS_PER_LEASE = 5
#: a standby looks at the lease this many times per lease period (one GET each), and also wakes up
#: when the ETag it watches has been unchanged for a whole period: takeover ≈ lease_seconds after
#: the last renewal, plus at most a tenth of it to see that renewal
LOOKS_PER_LEASE = 10
ROLES = ("active", "standby")


def role_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "streamlearn_role", "1 for this process's fleet role (active or standby)", ["role"], registry=registry
    )


class Fleet:
    """This process's membership: standby until :meth:`wait_until_active`, then the active's lease."""

    def __init__(
        self,
        cfg: Config,
        registry: CollectorRegistry,
        store: CheckpointStore,
        on_deposed: Callable[[], None],
        lease: Lease | None = None,
    ) -> None:
        self.cfg = cfg
        self.lease_s = cfg.fleet.lease_seconds
        self.renew_s = self.lease_s / RENEWALS_PER_LEASE
        self.look_s = self.lease_s / LOOKS_PER_LEASE
        self.holder = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.lease = lease or open_lease(cfg.checkpoint.dir, self.lease_s, self.holder)
        self.store = store
        self.on_deposed = on_deposed
        self.role = role_gauge(registry)
        self.epoch = 0
        self.active = False
        self.deposed = threading.Event()
        self._confirmed_at: float | None = None
        self._lock = threading.Lock()  # the renewal thread and the checkpoint's confirmation
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renew_log = Throttled(log, every_s=30.0)
        self._set_role("standby")

    def _set_role(self, role: str) -> None:
        for r in ROLES:
            self.role.labels(role=r).set(int(r == role))

    # -- standby --------------------------------------------------------------------------------
    def wait_until_active(self, stop: threading.Event) -> bool:
        """Serve as a standby until this process holds the lease (True) or ``stop`` is set (False).
        Called again after being deposed: the process is a standby once more."""
        self._stop.clear()
        self.deposed.clear()
        self._confirmed_at = None
        replica = self._start_standby_server()
        told = False
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                with self._lock:
                    epoch = self.lease.try_acquire(min_epoch=self._newest_epoch_in_store())
                if epoch is not None:
                    self._confirmed_at = t0
                    break
                if not told:
                    log.info(
                        "fleet: standby (active: %s); serving the newest checkpoint, taking over if its "
                        "lease (%.0f s) expires",
                        self.lease.holder_seen or "unknown yet",
                        self.lease_s,
                    )
                    told = True
                left = self.lease.until_expiry()
                stop.wait(self.look_s if left is None else min(self.look_s, max(0.01, left)))
            else:
                return False
        finally:
            if replica is not None:
                replica.stop()
        self.epoch = epoch
        self.store.new_writer(epoch)
        self.active = True
        self._set_role("active")
        log.info("fleet: active learner %s, leadership epoch %d", self.holder, epoch)
        self._thread = threading.Thread(target=self._keep, name="lease", daemon=True)
        self._thread.start()
        return True

    def _newest_epoch_in_store(self) -> int:
        try:
            found = self.store.list()
        except StreamlearnError:
            return 0
        return max((c.epoch for c in found), default=0)

    def _start_standby_server(self) -> ReplicaServer | None:
        if not self.cfg.serve.enabled:
            return None
        from streamlearn.serving.replica import ReplicaServer

        replica = ReplicaServer(self.cfg, self.cfg.checkpoint.dir, poll_seconds=self.renew_s, role="standby")
        standby_metrics = CollectorRegistry()
        role_gauge(standby_metrics).labels(role="standby").set(1)
        replica.source.extra_metrics = lambda: generate_latest(standby_metrics)  # type: ignore[method-assign]
        replica.start()
        s = self.cfg.serve
        log.info(
            "standby serving on http://%s:%d (newest checkpoint of %s)",
            s.host,
            replica.port,
            self.cfg.checkpoint.dir,
        )
        return replica

    # -- active ---------------------------------------------------------------------------------
    def _keep(self) -> None:
        while not self._stop.wait(self.renew_s):
            if not self._renew("renewal"):
                return

    def _renew(self, why: str) -> bool:
        """One conditional renewal; False once deposed."""
        if self.deposed.is_set():
            return False
        t0 = time.monotonic()
        with self._lock:
            ok = self.lease.renew()
        if ok:
            self._confirmed_at = t0
        elif ok is None:
            self._renew_log.warning(
                "fleet: lease %s failed (object store unreachable): learning goes on, checkpoints and "
                "offset commits wait until the lease is confirmed again",
                why,
            )
        else:
            self._depose()
        return not self.deposed.is_set()

    def _depose(self) -> None:
        if self.deposed.is_set():
            return
        self.deposed.set()
        self.active = False
        self._set_role("standby")
        log.error(
            "fleet: deposed: %s took the lease over (this process had epoch %d); stepping down to "
            "standby without checkpointing or committing",
            self.lease.holder_seen,
            self.epoch,
        )
        self.on_deposed()

    # -- fencing (streamlearn.delivery.Fence) ---------------------------------------------------
    def may_publish(self) -> bool:
        """The lease was confirmed recently enough that no standby can have taken over since."""
        c = self._confirmed_at
        fresh = c is not None and time.monotonic() - c < SAFE_FRACTION * self.lease_s
        return self.active and not self.deposed.is_set() and fresh

    def may_commit(self) -> bool:
        """Confirm leadership once more (a conditional write) right before committing offsets."""
        return self.active and self._renew("confirmation before an offset commit") and self.may_publish()

    def leave(self) -> bool:
        """Stop renewing; release the lease on a clean stop (a standby takes over at once).
        True when this process had been deposed (the lease is another's: nothing to release)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.deposed.is_set():
            return True
        if self.active:
            with self._lock:
                released = self.lease.release()
            self.active = False
            self._set_role("standby")
            if released:
                log.info("fleet: released the lease (epoch %d)", self.epoch)
            else:
                log.warning("fleet: could not release the lease: a standby takes over when it expires")
        return False

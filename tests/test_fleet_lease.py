"""The leadership lease on a real S3 API (moto_server) and on a local directory, and the epoch order
of checkpoints that fences a deposed writer."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from prometheus_client import CollectorRegistry

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import load_config_dict
from streamlearn.fleet import Fleet
from streamlearn.fleet.lease import LocalLease, S3Lease
from tests.test_checkpoint_s3 import s3, s3_endpoint  # noqa: F401 - fixtures

LEASE_S = 0.5


def _lease(s3: Any, holder: str) -> S3Lease:  # noqa: F811
    return S3Lease(f"s3://{s3.bucket}/model", LEASE_S, holder)


def _take_over(lease: S3Lease, min_epoch: int = 0, timeout_s: float = 10.0) -> int:
    """Look at the lease every tenth of it until it is ours (as a standby does); the new epoch."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        epoch = lease.try_acquire(min_epoch)
        if epoch is not None:
            return epoch
        time.sleep(LEASE_S / 10)
    raise AssertionError("never took over")


def test_one_holder_at_a_time_and_a_deposed_holder_knows_it(s3) -> None:  # noqa: F811
    a, b = _lease(s3, "a"), _lease(s3, "b")
    assert a.try_acquire(0) == 1
    assert b.try_acquire(0) is None and b.holder_seen == "a"
    for _ in range(4):  # renewed faster than it expires: b never takes over
        time.sleep(LEASE_S / 4)
        assert a.renew() is True
        assert b.try_acquire(0) is None
    assert _take_over(b) == 2  # a stops renewing (paused): b takes over after LEASE_S unchanged
    assert a.renew() is False, "the old holder's conditional renewal is refused: deposed"
    assert b.renew() is True


def test_a_released_lease_is_taken_at_once_with_an_epoch_above_the_checkpoints(s3) -> None:  # noqa: F811
    a, b = _lease(s3, "a"), _lease(s3, "b")
    assert a.try_acquire(0) == 1
    assert a.release() is True
    assert b.try_acquire(min_epoch=7) == 8, "no waiting after a release; above every epoch seen"


def test_two_standbys_racing_for_an_expired_lease_one_wins(s3) -> None:  # noqa: F811
    a, b, c = _lease(s3, "a"), _lease(s3, "b"), _lease(s3, "c")
    assert a.try_acquire(0) == 1
    assert b.try_acquire(0) is None and c.try_acquire(0) is None  # both start watching
    time.sleep(LEASE_S * 1.5)
    won = [b.try_acquire(0), c.try_acquire(0)]
    assert sorted(won, key=str) == [2, None], won


def test_local_lease_is_a_lock_released_by_the_holder(tmp_path: Path) -> None:
    a, b = LocalLease(tmp_path, "a"), LocalLease(tmp_path, "b")
    assert a.try_acquire(0) == 1
    assert b.try_acquire(0) is None
    assert a.renew() is True
    a.release()
    assert b.try_acquire(0) == 2, "the epoch is kept in the lock file"


def _state(examples: int) -> dict[str, Any]:
    return {"format": 1, "w": torch.full((2,), float(examples)), "offsets": {"t:0": examples}}


def test_a_higher_epoch_wins_whatever_the_lower_one_learned(tmp_path: Path) -> None:
    old = CheckpointStore(tmp_path, keep=10)
    old.save(_state(100), 100)  # written before the fleet: epoch 0, the former name
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000000100-000001.slc"]
    zombie, successor = CheckpointStore(tmp_path, keep=10), CheckpointStore(tmp_path, keep=10)
    zombie.epoch, successor.epoch = 1, 2
    successor.save(_state(150), 150)
    zombie.save(_state(900), 900)  # the deposed active learned more since, but its epoch is lower
    found = CheckpointStore(tmp_path).latest()
    assert found is not None
    assert (found[0].epoch, found[0].examples) == (2, 150)
    assert found[0].path.name == "ckpt-000000000150-000001-e2.slc"
    res = subprocess.run(
        [sys.executable, "-m", "streamlearn.cli", "checkpoint", "inspect", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert (shown["leadership_epoch"], shown["offsets"]) == (2, {"t:0": 150})


def test_a_single_learner_writes_the_newest_epoch_it_restored(tmp_path: Path) -> None:
    fleet = CheckpointStore(tmp_path, keep=10)
    fleet.epoch = 3
    fleet.save(_state(100), 100)
    single = CheckpointStore(tmp_path, keep=10)  # fleet.enabled turned off later: must not lose
    assert single.latest() is not None and single.epoch == 3
    single.save(_state(200), 200)
    newest = CheckpointStore(tmp_path).latest_info()
    assert newest is not None and (newest.epoch, newest.examples) == (3, 200)


def _roles(registry: CollectorRegistry) -> dict[str, float]:
    return {
        r: registry.get_sample_value("streamlearn_role", {"role": r}) or 0.0 for r in ("active", "standby")
    }


def test_a_deposed_fleet_member_is_a_standby_again_and_can_take_over_later(s3) -> None:  # noqa: F811
    url = f"s3://{s3.bucket}/model"
    cfg = load_config_dict(
        {
            "checkpoint": {"dir": url},
            "fleet": {"enabled": True, "lease_seconds": 2},
            "serve": {"enabled": False},
        },
        "test",
    )
    stop = threading.Event()
    members = []
    for name in ("a", "b"):
        registry, deposed = CollectorRegistry(), threading.Event()
        store = CheckpointStore(url)
        fleet = Fleet(cfg, registry, store, on_deposed=deposed.set, lease=_lease(s3, name))
        members.append((fleet, registry, deposed, store))
    (a, a_reg, a_deposed, a_store), (b, b_reg, _, b_store) = members
    assert a.wait_until_active(stop) and a.epoch == 1 and a_store.epoch == 1
    assert _roles(a_reg) == {"active": 1.0, "standby": 0.0}
    a._stop.set()  # its renewals stop, as in a paused process
    assert a._thread is not None
    a._thread.join(timeout=10)
    assert b.wait_until_active(stop) and b.epoch == 2  # b takes over once a's lease is not renewed
    assert b_store.epoch == 2 and _roles(b_reg) == {"active": 1.0, "standby": 0.0}
    assert not a.may_commit(), "the old active's confirmation before a commit is refused"
    assert a_deposed.is_set() and not a.may_publish()
    assert _roles(a_reg) == {"active": 0.0, "standby": 1.0}
    assert a.leave() is True, "deposed: nothing to release"
    assert b.leave() is False  # a clean stop releases the lease ...
    assert _roles(b_reg) == {"active": 0.0, "standby": 1.0}
    assert a.wait_until_active(stop), "... and the former zombie, a standby again, takes over at once"
    assert (a.epoch, a_store.epoch) == (3, 3)
    assert _roles(a_reg) == {"active": 1.0, "standby": 0.0} and a.may_publish()
    assert a.leave() is False

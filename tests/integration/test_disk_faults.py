"""Disk faults under the checkpoint directory: counted and logged, learning goes on, offsets wait.

The checkpoint directory is a real 16 MiB tmpfs: first it fills up (ENOSPC), then it is remounted
read-only (EROFS), then it is writable again. Permissions cannot simulate this here — the tests
run as root, which ignores them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.produce import produce, stream_messages
from tests.integration.test_daemon import committed, make_config
from tests.integration.test_replica import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test (needs CAP_SYS_ADMIN, which CI and dev machines have)."""
    mnt = tmp_path / "vol"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    assert res.returncode == 0, f"cannot mount a tmpfs for the disk-fault test: {res.stderr}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _remount(mnt: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], check=True)


def _fill(mnt: Path) -> Path:
    """Write until the filesystem says ENOSPC; returns the filler to delete."""
    filler = mnt / "filler"
    chunk = b"\0" * (256 * 1024)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_full_then_read_only_checkpoint_volume_never_moves_offsets_past_a_durable_checkpoint(
    broker, topic, tmp_path, volume, caplog
) -> None:
    caplog.set_level(logging.ERROR, logger="streamlearn.daemon")
    ckpt_dir = volume / "ckpt"
    cfg = make_config(
        broker, topic, tmp_path, checkpoint={"dir": str(ckpt_dir), "every_examples": 100, "every_seconds": 30}
    )
    group = cfg["kafka"]["group_id"]
    stream = list(stream_messages("rotated-mnist-10k", 1))
    daemon = Daemon(load_config_dict(cfg, "test"))
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(daemon.run()))
    store = CheckpointStore(ckpt_dir)

    def failures() -> float:
        return daemon.registry.get_sample_value("streamlearn_checkpoint_failures_total") or 0.0

    def newest_offset() -> int | None:
        found = store.latest()
        return None if found is None else found[1]["offsets"][f"{topic}:0"]

    produce(stream[:200], broker.bootstrap_servers, topic, progress=None)
    runner.start()
    try:
        wait_for(lambda: daemon.learned == 200 and committed(broker, group, topic) == 200, 60)

        # 1. Disk full: every checkpoint fails with ENOSPC; learning goes on; nothing committed.
        filler = _fill(volume)
        # One hundred at a time: a pass of the loop may learn more than 100 examples before the
        # checkpoint clock is asked, so 300 at once can mean only two attempts.
        for end in (300, 400, 500):
            seen = failures()
            produce(stream[end - 100 : end], broker.bootstrap_servers, topic, progress=None)
            wait_for(lambda end=end, seen=seen: daemon.learned == end and failures() >= seen + 1, 60)
        assert failures() >= 3
        assert committed(broker, group, topic) == 200 and newest_offset() == 200
        assert any("No space left on device" in r.getMessage() for r in caplog.records)
        assert not list(ckpt_dir.glob(".ckpt-*.tmp")), "a failed write left a half-written file"

        # 2. Read-only volume: still learning, still counted, still nothing committed.
        filler.unlink()
        _remount(volume, "ro")
        for end in (600, 700):
            seen = failures()
            produce(stream[end - 100 : end], broker.bootstrap_servers, topic, progress=None)
            wait_for(lambda end=end, seen=seen: daemon.learned == end and failures() >= seen + 1, 60)
        assert committed(broker, group, topic) == 200 and newest_offset() == 200
        assert any("Read-only file system" in r.getMessage() for r in caplog.records)

        # 3. Writable again: the next checkpoint catches up and commits everything learned.
        _remount(volume, "rw")
        produce(stream[700:800], broker.bootstrap_servers, topic, progress=None)
        wait_for(lambda: daemon.learned == 800 and committed(broker, group, topic) == 800, 60)
        assert newest_offset() == 800
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _remount(volume, "rw")
        daemon.request_stop()
        runner.join(timeout=60)
    assert not runner.is_alive()
    assert result["learned"] == 800 and result["checkpoint_failures"] == failures() >= 5
    found = store.latest()
    assert found is not None and found[1]["learner"]["examples"] == 800

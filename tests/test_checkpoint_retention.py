"""Old checkpoints removed off the writer's path (``checkpoint/retention.py``), on a real filesystem.

Object stores use it by default (a DELETE round trip each); a local directory can opt in, which lets
these tests make a removal fail for real: a directory cannot be unlinked.
"""

from __future__ import annotations

import logging

import torch

from streamlearn.checkpoint import CheckpointStore
from streamlearn.checkpoint.retention import BackgroundRemover


def state(i: int) -> dict:
    return {"format": 1, "step": i, "w": torch.full((2,), float(i)), "offsets": {"t:0": i}}


def test_the_remover_deletes_what_it_is_given_and_wait_says_when_it_is_done(tmp_path) -> None:
    files = [tmp_path / f"f{i}" for i in range(5)]
    for f in files:
        f.write_bytes(b"x")
    remover = BackgroundRemover()
    assert remover.wait(timeout=0) and remover.pending == 0  # nothing submitted: done at once
    remover.submit(files[:3])
    remover.submit(files[3:])
    assert remover.wait(timeout=10)
    assert remover.pending == 0 and not any(f.exists() for f in files)
    assert remover.take_failed() == []


def test_a_removal_that_fails_is_logged_and_handed_back_once(tmp_path, caplog) -> None:
    stuck = tmp_path / "ckpt-dir"
    stuck.mkdir()  # unlink() of a directory fails with an OSError
    gone = tmp_path / "ok"
    gone.write_bytes(b"x")
    remover = BackgroundRemover()
    with caplog.at_level(logging.WARNING, logger="streamlearn.checkpoint.retention"):
        remover.submit([stuck, gone])
        assert remover.wait(timeout=10)
    assert not gone.exists() and stuck.is_dir()
    assert remover.take_failed() == [stuck]
    assert remover.take_failed() == []  # handed back once: the caller owns the retry
    assert any(
        "could not remove old checkpoint" in r.message and "ckpt-dir" in r.message for r in caplog.records
    )


def test_the_store_keeps_the_newest_k_and_retries_a_failed_removal_at_the_next_save(tmp_path) -> None:
    store = CheckpointStore(tmp_path, keep=2, background_removal=True)
    first = store.save(state(1), examples=100)
    # the first checkpoint becomes impossible to unlink: a directory under its name
    first.unlink()
    first.mkdir()
    store.save(state(2), examples=200)
    store.save(state(3), examples=300)  # the removal of `first` is queued, and fails
    assert store.wait_for_removals(timeout=10)
    assert first.is_dir()
    assert [c.examples for c in store.list()] == [100, 200, 300]
    # the cause goes away; the next save removes it along with the checkpoint now too old
    first.rmdir()
    first.write_bytes(b"an old checkpoint")
    store.save(state(4), examples=400)
    assert store.wait_for_removals(timeout=10)
    assert [c.examples for c in store.list()] == [300, 400]
    assert store.latest()[1]["step"] == 4  # type: ignore[index]


def test_a_local_directory_removes_inline_by_default(tmp_path) -> None:
    store = CheckpointStore(tmp_path, keep=1)
    for i in range(1, 4):
        store.save(state(i), examples=i)
        # no thread: the old one is gone when save returns
        assert [c.examples for c in store.list()] == [i]
    assert store.wait_for_removals(timeout=0)

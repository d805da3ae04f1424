import hashlib
import os
import pickle
import stat

import pytest
import torch

from streamlearn import checkpoint as ck
from streamlearn.errors import CheckpointError


def state(i: int) -> dict:
    return {"format": 1, "step": i, "w": torch.full((3, 2), float(i)), "offsets": {"t:0": i * 10}}


def test_save_then_latest_round_trips_and_keeps_the_last_k(tmp_path) -> None:
    store = ck.CheckpointStore(tmp_path, keep=2)
    for i in range(1, 5):
        store.save(state(i), examples=i * 100)
    files = store.list()
    assert [c.examples for c in files] == [300, 400]
    info, loaded = store.latest()
    assert info.examples == 400 and loaded["step"] == 4
    assert torch.equal(loaded["w"], torch.full((3, 2), 4.0))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_two_saves_at_the_same_count_are_ordered(tmp_path) -> None:
    store = ck.CheckpointStore(tmp_path, keep=5)
    store.save(state(1), examples=100)
    store.save(state(2), examples=100)
    assert store.latest()[1]["step"] == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "header"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage, caplog) -> None:
    store = ck.CheckpointStore(tmp_path, keep=3)
    store.save(state(1), examples=100)
    newest = store.save(state(2), examples=200)
    blob = bytearray(newest.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip":
        blob[-100] ^= 0x01
    else:
        blob[:5] = b"XXXXX"
    newest.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError):
        ck.read(newest)
    info, loaded = store.latest()
    assert loaded["step"] == 1 and info.examples == 100
    assert "skipping unusable checkpoint" in caplog.text


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_malicious_pickle_is_refused_even_with_a_valid_checksum(tmp_path) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    payload = pickle.dumps({"format": 1, "evil": Exploit()})
    blob = ck.MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    path = tmp_path / "ckpt-000000000100-000001.slc"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError, match="refused to load"):
        ck.read(path)
    assert not (tmp_path / "pwned").exists()
    assert ck.CheckpointStore(tmp_path).latest() is None


def test_an_unwritable_directory_raises_and_leaves_older_checkpoints(tmp_path) -> None:
    if os.geteuid() == 0:
        # root ignores directory permissions; a path under a regular file can't be created by anyone
        target = tmp_path / "file"
        target.write_text("x")
        store = ck.CheckpointStore(target / "sub")
    else:
        target = tmp_path / "ro"
        target.mkdir()
        os.chmod(target, stat.S_IRUSR | stat.S_IXUSR)
        store = ck.CheckpointStore(target)
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        store.save(state(1), examples=1)


def test_describe_summarises_a_learner_checkpoint() -> None:
    from streamlearn.learners import make_learner, mlp

    learner = make_learner("mer", mlp(4, 3, (5,)), n_classes=3, memories=5)
    learner.learn(torch.rand(2, 4), torch.tensor([0, 1]))
    d = ck.describe({"format": 1, "created": 0, "learner": learner.state_dict(), "offsets": {"t:0": 2}})
    assert d["learner"] == "mer" and d["examples_learned"] == 2
    assert d["replay_buffer"] == {"capacity": 5, "size": 2, "seen": 2}
    assert d["model_parameters"]["0.weight"] == [5, 4]


def test_a_half_written_temporary_left_by_a_crash_is_removed_at_start(tmp_path) -> None:
    store = ck.CheckpointStore(tmp_path)
    good = store.save({"offsets": {"t:0": 5}}, 5)
    torn = tmp_path / f".{good.name}.12345.tmp"
    torn.write_bytes(b"half a checkpoint")  # what a kill -9 during write() leaves
    assert store.remove_stale_temporaries() == 1
    assert not torn.exists() and good.exists()
    found = store.latest()
    assert found is not None and found[1]["offsets"] == {"t:0": 5}


def test_a_writer_lists_its_location_once_then_keeps_track_of_its_own_saves(tmp_path) -> None:
    store = ck.CheckpointStore(tmp_path, keep=2)
    store.save(state(0), examples=1)  # a checkpoint the previous run left
    writer = ck.CheckpointStore(tmp_path, keep=2)
    listings = []
    real_list = writer.storage.list
    writer.storage.list = lambda: listings.append(1) or real_list()  # type: ignore[method-assign]
    for i in range(1, 5):
        writer.save(state(i), examples=i * 100)
    assert len(listings) == 1  # the first save only
    assert [c.examples for c in writer.list()] == [300, 400]  # the old run's checkpoint pruned too
    (tmp_path / writer.list()[0].path.name).unlink()  # removed behind the writer's back: no harm
    writer.save(state(5), examples=500)
    assert [c.examples for c in writer.list()] == [400, 500]

"""The benchmark streams against their definition (DESIGN.md §4), recomputed here from the text.

Expected values are derived in this file with a fresh RandomState and Pillow, or taken from the
dataset's README (md5s, label counts, mean pixel); nothing is copied from the implementation.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import streamlearn
from streamlearn.streams import STREAM_NAMES, TaskStream, load_mnist_test, load_stream
from streamlearn.streams.mnist import read_mnist_test

MNIST_DIR = Path(streamlearn.__file__).parent / "data" / "mnist"
IMAGES_GZ = "t10k-images-idx3-ubyte.gz"
LABELS_GZ = "t10k-labels-idx1-ubyte.gz"
README_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
ROTATED, PERMUTED = "rotated-mnist-10k", "permuted-mnist-10k"


# --- the definition, transcribed -------------------------------------------------------------


def definition_draws(stream: str, seed: int = 0) -> tuple[np.ndarray, list, list[np.ndarray]]:
    """(eval pool, per-task angle or pixel permutation, per-task train indices), in the text's order."""
    rng = np.random.RandomState(seed)
    perm = rng.permutation(10000)
    train_pool, eval_pool = perm[:8000], perm[8000:]
    if stream == ROTATED:
        per_task: list = [(t + rng.random_sample()) * 9 for t in range(20)]
    else:
        per_task = [rng.permutation(784) for t in range(20)]
    train_idx = [rng.choice(train_pool, 1000, replace=False) for t in range(20)]
    return eval_pool, per_task, train_idx


def rotated_example(img: np.ndarray, angle: float) -> np.ndarray:
    rotated = np.asarray(Image.fromarray(img).rotate(angle))
    return (rotated.astype(np.float32) / 255.0).flatten()


def permuted_example(img: np.ndarray, pixperm: np.ndarray) -> np.ndarray:
    return (img.flatten().astype(np.float32) / 255.0)[pixperm]


# --- fixtures ----------------------------------------------------------------------------------


def _gunzip(name: str) -> bytes:
    return gzip.decompress((MNIST_DIR / name).read_bytes())


@pytest.fixture(scope="module")
def raw_mnist() -> tuple[np.ndarray, np.ndarray]:
    """MNIST decoded straight from the IDX layout (16- and 8-byte headers), without the loader."""
    images = np.frombuffer(_gunzip(IMAGES_GZ)[16:], dtype=np.uint8).reshape(10000, 28, 28)
    labels = np.frombuffer(_gunzip(LABELS_GZ)[8:], dtype=np.uint8).astype(np.int64)
    return images, labels


@pytest.fixture(scope="module")
def rotated_full() -> TaskStream:
    return load_stream(ROTATED)


@pytest.fixture(scope="module")
def permuted_two() -> TaskStream:
    return load_stream(PERMUTED, n_tasks=2)


# --- the packaged MNIST files ------------------------------------------------------------------


def test_packaged_files_have_the_readme_md5s() -> None:
    assert hashlib.md5(_gunzip(IMAGES_GZ)).hexdigest() == "2646ac647ad5339dbf082846283269ea"
    assert hashlib.md5(_gunzip(LABELS_GZ)).hexdigest() == "27ae3e4e09519cfbb04c329615203637"


def test_readme_keeps_the_attribution() -> None:
    readme = (MNIST_DIR / "README.md").read_text(encoding="utf-8")
    assert "CC BY-SA 3.0" in readme
    assert "LeCun" in readme


def test_load_mnist_test_matches_raw_bytes_and_readme(raw_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = load_mnist_test()
    assert images.dtype == np.uint8 and images.shape == (10000, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (10000,)
    np.testing.assert_array_equal(images, raw_mnist[0])
    np.testing.assert_array_equal(labels, raw_mnist[1])
    assert np.bincount(labels, minlength=10).tolist() == README_LABEL_COUNTS
    assert round(float(images.mean()), 2) == 33.79


def test_load_mnist_test_is_cached_and_read_only() -> None:
    first, second = load_mnist_test(), load_mnist_test()
    assert first[0] is second[0] and first[1] is second[1]
    assert not first[0].flags.writeable and not first[1].flags.writeable


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return gzip.compress(header + payload)


def _write_mnist(directory: Path, images_gz: bytes, labels_gz: bytes) -> None:
    (directory / IMAGES_GZ).write_bytes(images_gz)
    (directory / LABELS_GZ).write_bytes(labels_gz)


GOOD_LABELS = _idx(2049, (10000,), bytes(10000))


@pytest.mark.parametrize(
    ("images_gz", "message"),
    [
        (_idx(2049, (10000, 28, 28), bytes(10000 * 784)), "magic number 2049, expected 2051"),
        (_idx(2051, (10000, 28, 28), bytes(100)), "corrupt IDX file"),
        (_idx(2051, (5, 28, 28), bytes(5 * 784)), "expected (10000, 28, 28)"),
        (b"this is not gzip data", "corrupt gzip"),
        (gzip.compress(bytes(10000 * 784 + 16))[:-20], "corrupt gzip"),
    ],
    ids=["wrong-magic", "truncated-data", "wrong-count", "not-gzip", "truncated-gzip"],
)
def test_corrupt_mnist_files_raise_value_error(tmp_path: Path, images_gz: bytes, message: str) -> None:
    _write_mnist(tmp_path, images_gz, GOOD_LABELS)
    with pytest.raises(ValueError, match=IMAGES_GZ) as info:
        read_mnist_test(tmp_path)
    assert message in str(info.value)


def test_out_of_range_label_raises(tmp_path: Path) -> None:
    images = _idx(2051, (10000, 28, 28), bytes(10000 * 784))
    _write_mnist(tmp_path, images, _idx(2049, (10000,), bytes([10]) * 10000))
    with pytest.raises(ValueError, match="label 10"):
        read_mnist_test(tmp_path)


# --- rotated-mnist-10k ------------------------------------------------------------------------


def test_rotated_shapes_dtypes_and_ranges(rotated_full: TaskStream) -> None:
    assert rotated_full.name == ROTATED
    assert (rotated_full.n_inputs, rotated_full.n_classes) == (784, 10)
    assert [task.index for task in rotated_full.tasks] == list(range(20))
    for task in rotated_full.tasks:
        assert task.train_x.dtype == np.float32 and task.train_x.shape == (1000, 784)
        assert task.train_x.flags.c_contiguous
        assert task.train_y.dtype == np.int64 and task.train_y.shape == (1000,)
        assert task.eval_x.dtype == np.float32 and task.eval_x.shape == (2000, 784)
        assert task.eval_y.dtype == np.int64 and task.eval_y.shape == (2000,)
        for x in (task.train_x, task.eval_x):
            assert x.min() >= 0.0 and x.max() <= 1.0
        # ~10% per class: every class present, none wildly over- or under-represented.
        assert all(60 <= n <= 160 for n in np.bincount(task.train_y, minlength=10))
        assert all(120 <= n <= 320 for n in np.bincount(task.eval_y, minlength=10))


def test_rotated_angles_follow_the_definition(rotated_full: TaskStream) -> None:
    _, angles, _ = definition_draws(ROTATED)
    assert rotated_full.tasks[0].info["angle"] == angles[0]
    for t, task in enumerate(rotated_full.tasks):
        assert task.info["angle"] == angles[t]
        assert 9 * t <= task.info["angle"] < 9 * (t + 1)


@pytest.mark.parametrize("t", [0, 19])
def test_rotated_train_examples_follow_the_definition(
    rotated_full: TaskStream, raw_mnist: tuple[np.ndarray, np.ndarray], t: int
) -> None:
    images, labels = raw_mnist
    _, angles, train_idx = definition_draws(ROTATED)
    task = rotated_full.tasks[t]
    for i, mnist_index in enumerate(train_idx[t][:5]):
        np.testing.assert_array_equal(task.train_x[i], rotated_example(images[mnist_index], angles[t]))
    np.testing.assert_array_equal(task.train_y, labels[train_idx[t]])


def test_rotated_eval_set_is_the_eval_pool_rotated_per_task(
    rotated_full: TaskStream, raw_mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = raw_mnist
    eval_pool, angles, _ = definition_draws(ROTATED)
    assert len(set(eval_pool.tolist())) == 2000
    for t, task in enumerate(rotated_full.tasks):
        np.testing.assert_array_equal(task.eval_y, labels[eval_pool])
        # every task in full would double the test's cost; a strided sample covers the whole pool
        for i in range(0, 2000, 97):
            np.testing.assert_array_equal(task.eval_x[i], rotated_example(images[eval_pool[i]], angles[t]))
    first, last = rotated_full.tasks[0], rotated_full.tasks[-1]
    assert not np.array_equal(first.eval_x, last.eval_x)


def test_rotated_prefix_is_identical_to_full_stream(rotated_full: TaskStream) -> None:
    short = load_stream(ROTATED, n_tasks=3)
    assert len(short.tasks) == 3
    for mine, full in zip(short.tasks, rotated_full.tasks[:3], strict=True):
        assert mine.index == full.index and mine.info == full.info
        for field in ("train_x", "train_y", "eval_x", "eval_y"):
            np.testing.assert_array_equal(getattr(mine, field), getattr(full, field))


# --- permuted-mnist-10k -----------------------------------------------------------------------


def test_permuted_examples_follow_the_definition(
    permuted_two: TaskStream, raw_mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = raw_mnist
    eval_pool, pixperms, train_idx = definition_draws(PERMUTED)
    assert permuted_two.name == PERMUTED and len(permuted_two.tasks) == 2
    for t, task in enumerate(permuted_two.tasks):
        assert task.train_x.dtype == np.float32 and task.train_x.shape == (1000, 784)
        assert task.train_x.flags.c_contiguous and task.eval_x.shape == (2000, 784)
        for i, mnist_index in enumerate(train_idx[t][:5]):
            np.testing.assert_array_equal(task.train_x[i], permuted_example(images[mnist_index], pixperms[t]))
        np.testing.assert_array_equal(task.train_y, labels[train_idx[t]])
        np.testing.assert_array_equal(task.eval_y, labels[eval_pool])
        expected_eval = np.stack([permuted_example(images[j], pixperms[t]) for j in eval_pool])
        np.testing.assert_array_equal(task.eval_x, expected_eval)


def test_permuted_uses_the_same_pools_as_rotated(rotated_full: TaskStream, permuted_two: TaskStream) -> None:
    np.testing.assert_array_equal(permuted_two.tasks[0].eval_y, rotated_full.tasks[0].eval_y)


def test_permuted_prefix_is_identical(permuted_two: TaskStream) -> None:
    one = load_stream(PERMUTED, n_tasks=1).tasks[0]
    np.testing.assert_array_equal(one.train_x, permuted_two.tasks[0].train_x)
    np.testing.assert_array_equal(one.eval_x, permuted_two.tasks[0].eval_x)


def test_seed_is_a_parameter(raw_mnist: tuple[np.ndarray, np.ndarray], permuted_two: TaskStream) -> None:
    images, _ = raw_mnist
    _, pixperms, train_idx = definition_draws(PERMUTED, seed=1)
    other = load_stream(PERMUTED, n_tasks=1, seed=1).tasks[0]
    np.testing.assert_array_equal(other.train_x[0], permuted_example(images[train_idx[0][0]], pixperms[0]))
    assert not np.array_equal(other.train_x, permuted_two.tasks[0].train_x)


# --- arguments --------------------------------------------------------------------------------


def test_stream_names() -> None:
    assert STREAM_NAMES == (ROTATED, PERMUTED)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown stream") as info:
        load_stream("rotated-mnist")
    assert all(name in str(info.value) for name in STREAM_NAMES)


@pytest.mark.parametrize("n_tasks", [0, -1, 21])
def test_n_tasks_out_of_range(n_tasks: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.20"):
        load_stream(PERMUTED, n_tasks=n_tasks)

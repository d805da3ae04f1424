"""The shared continual-learning benchmark streams, built exactly as DESIGN.md §4 defines them.

Both streams come from one ``numpy.random.RandomState(seed)`` consumed in a fixed order:

* ``perm = rng.permutation(10000)``; train pool ``perm[:8000]``, eval pool ``perm[8000:]``;
* ``rotated-mnist-10k``: for t in 0..19 ``angle_t = (t + rng.random_sample()) * 9`` degrees;
  ``permuted-mnist-10k``: for t in 0..19 ``pixperm_t = rng.permutation(784)``;
* for t in 0..19 ``train_idx_t = rng.choice(train_pool, 1000, replace=False)``.

A rotated example is ``Image.fromarray(img).rotate(angle_t)`` (Pillow defaults: nearest neighbour,
no expand), divided by 255 in float32 and flattened; a permuted example is the flattened /255 image
indexed by ``pixperm_t``. Task t trains on its 1000 images and evaluates on all 2000 eval-pool
images under the same transform. All 20 tasks' draws are always consumed, so task t is the same
whatever ``n_tasks`` is asked for; results compare across runs only if this order never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from streamlearn.streams.mnist import load_mnist_test

STREAM_NAMES: tuple[str, ...] = ("rotated-mnist-10k", "permuted-mnist-10k")
MAX_TASKS = 20
N_INPUTS = 784
N_CLASSES = 10
TRAIN_POOL_SIZE = 8000
TRAIN_PER_TASK = 1000
DEGREES_PER_TASK = 9.0


# eq=False: the generated __eq__ would compare numpy arrays and raise on truth-testing,
# and a frozen dataclass with eq would also try to hash them.
@dataclass(frozen=True, eq=False)
class Task:
    """One task of a benchmark stream: its training examples and its held-out eval set."""

    index: int
    train_x: np.ndarray  # float32, (n_train, 784), C-contiguous
    train_y: np.ndarray  # int64, (n_train,)
    eval_x: np.ndarray  # float32, (n_eval, 784)
    eval_y: np.ndarray  # int64, (n_eval,)
    info: dict[str, float | int]  # what distinguishes the task, e.g. {"angle": 4.93}


@dataclass(frozen=True, eq=False)
class TaskStream:
    """A named sequence of tasks sharing one input size and label space."""

    name: str
    n_inputs: int
    n_classes: int
    tasks: list[Task]


def _split_pools(rng: np.random.RandomState, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n_images)
    return perm[:TRAIN_POOL_SIZE], perm[TRAIN_POOL_SIZE:]


def _draw_train_indices(rng: np.random.RandomState, train_pool: np.ndarray) -> list[np.ndarray]:
    return [rng.choice(train_pool, TRAIN_PER_TASK, replace=False) for _ in range(MAX_TASKS)]


def _to_features(images: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) → float32 (n, 784) in [0, 1]; dividing in float32 is part of the definition."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def _rotate(images: np.ndarray, angle: float) -> np.ndarray:
    """Rotate each image by ``angle`` degrees with Pillow's defaults (nearest, no expand, black fill)."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).rotate(angle))
    return out


def _rotated_tasks(seed: int, n_tasks: int) -> list[Task]:
    images, labels = load_mnist_test()
    rng = np.random.RandomState(seed)
    train_pool, eval_pool = _split_pools(rng, len(images))
    angles = [(t + rng.random_sample()) * DEGREES_PER_TASK for t in range(MAX_TASKS)]
    train_indices = _draw_train_indices(rng, train_pool)
    eval_images, eval_y = images[eval_pool], labels[eval_pool]
    return [
        Task(
            index=t,
            train_x=_to_features(_rotate(images[train_indices[t]], angles[t])),
            train_y=labels[train_indices[t]],
            eval_x=_to_features(_rotate(eval_images, angles[t])),
            eval_y=eval_y.copy(),
            info={"angle": float(angles[t])},
        )
        for t in range(n_tasks)
    ]


def _permuted_tasks(seed: int, n_tasks: int) -> list[Task]:
    images, labels = load_mnist_test()
    rng = np.random.RandomState(seed)
    train_pool, eval_pool = _split_pools(rng, len(images))
    pixel_perms = [rng.permutation(N_INPUTS) for _ in range(MAX_TASKS)]
    train_indices = _draw_train_indices(rng, train_pool)
    # Permuting columns commutes with the elementwise /255, so the eval pool is scaled once.
    eval_base, eval_y = _to_features(images[eval_pool]), labels[eval_pool]
    return [
        Task(
            index=t,
            train_x=np.ascontiguousarray(_to_features(images[train_indices[t]])[:, pixel_perms[t]]),
            train_y=labels[train_indices[t]],
            eval_x=np.ascontiguousarray(eval_base[:, pixel_perms[t]]),
            eval_y=eval_y.copy(),
            info={},
        )
        for t in range(n_tasks)
    ]


_BUILDERS: dict[str, Callable[[int, int], list[Task]]] = {
    "rotated-mnist-10k": _rotated_tasks,
    "permuted-mnist-10k": _permuted_tasks,
}


def _check_n_tasks(n_tasks: int | None) -> int:
    if n_tasks is None:
        return MAX_TASKS
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int):
        raise TypeError(f"n_tasks must be an int, got {type(n_tasks).__name__}")
    if not 1 <= n_tasks <= MAX_TASKS:
        raise ValueError(f"n_tasks must be in 1..{MAX_TASKS}, got {n_tasks}")
    return n_tasks


def load_stream(name: str, n_tasks: int | None = None, seed: int = 0) -> TaskStream:
    """Build benchmark stream ``name`` (one of :data:`STREAM_NAMES`); the benchmark uses seed 0.

    ``n_tasks`` keeps the first tasks only (1..20, default all 20); they are identical to the
    same tasks of the full stream.

    >>> stream = load_stream("permuted-mnist-10k", n_tasks=2)
    >>> len(stream.tasks), stream.tasks[1].train_x.shape, stream.tasks[1].eval_x.shape
    (2, (1000, 784), (2000, 784))
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ValueError(f"unknown stream {name!r}; valid names: {', '.join(STREAM_NAMES)}")
    tasks = builder(seed, _check_n_tasks(n_tasks))
    return TaskStream(name=name, n_inputs=N_INPUTS, n_classes=N_CLASSES, tasks=tasks)

"""The compiled, numpy and reference paths of MER, La-MAML and C-MAML learn the same model.

Each case learns 200 MNIST-like examples (sparse non-negative 784-pixel inputs) three times from the
same seed, once per path, and holds the weights (and La-MAML's learning rates) to 1e-5 of each other.
"""

import pytest
import torch

from streamlearn.learners import LEARNERS, make_learner, mlp, validate_hparams
from tests.learners.equality import CASES, IDS, learned, mnist_like, state

numba = pytest.importorskip("numba")

PATHS = ("compiled", "numpy", False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name,hp", CASES, ids=IDS)
def test_three_paths_agree_after_200_examples(name, hp) -> None:
    x, y = mnist_like()
    learners = [learned(name, p, hp, x, y) for p in PATHS]
    assert [lr.path for lr in learners] == ["compiled", "numpy", "reference"]
    states = [state(lr) for lr in learners]
    moved = float((states[0] - state(learned(name, False, hp, x[:0], y[:0]))).abs().max())
    assert moved > 1e-2  # the comparison below is not between models that never learned
    for other, path in zip(states[1:], PATHS[1:], strict=True):
        diff = float((states[0] - other).abs().max())
        assert diff < 1e-5, (path, diff)
    buffers = [lr.buffer for lr in learners]
    assert all(b is not None and torch.equal(b.x, buffers[0].x) for b in buffers)


def test_default_is_the_numpy_path_and_compiled_is_opt_in() -> None:
    assert make_learner("mer", mlp(6, 3, (5,)), n_classes=3).path == "numpy"
    compiled_mer = make_learner("mer", mlp(6, 3, (5,)), n_classes=3, fast_path="compiled")
    assert (compiled_mer.path, compiled_mer.fast_path) == ("compiled", True)
    assert make_learner("lamaml", mlp(6, 3, (5,)), n_classes=3, fast_path=True).path == "numpy"
    assert make_learner("cmaml", mlp(6, 3, (5,)), n_classes=3, fast_path=False).path == "reference"
    # second-order La-MAML needs autograd: the default falls back, an explicit kernel is refused
    assert make_learner("lamaml", mlp(6, 3, (5,)), n_classes=3, second_order=True).path == "reference"
    with pytest.raises(ValueError, match="fast_path='compiled' needs first-order"):
        make_learner("lamaml", mlp(6, 3, (5,)), n_classes=3, second_order=True, fast_path="compiled")


@pytest.mark.parametrize("name", ["mer", "lamaml", "cmaml"])
def test_fast_path_choice_is_a_config_value_not_a_hyper_parameter(name) -> None:
    for value in ("compiled", "numpy", True, False, None):
        validate_hparams(name, {"fast_path": value})
    learner = make_learner(name, mlp(6, 3, (5,)), n_classes=3, fast_path="numpy")
    assert "fast_path" not in learner.hparams()
    assert name in LEARNERS


def test_compiled_lr_stats_are_the_reference_ones() -> None:
    x, y = mnist_like(40)
    learner = learned("lamaml", "compiled", {}, x, y)
    alphas = [a.detach().numpy() for a in learner.alpha.values()]
    kernel = learner._kernel
    assert kernel is not None
    compiled = kernel.lr_stats(tuple(alphas[0::2]), tuple(alphas[1::2]))  # type: ignore[attr-defined]
    reference = learner.lr_stats()
    assert reference["min"] < reference["max"]  # the rates were learned apart
    assert compiled == pytest.approx(reference, rel=1e-6)

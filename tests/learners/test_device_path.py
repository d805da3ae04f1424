"""The device path (``device_path.py``) learns what the reference path learns, reading nothing back
to the host inside an update but the guard's one transfer.

On the CPU these run in CI; the ``cuda`` cases run the same on a GPU and are skipped, visibly, where
torch sees none (``make test-cuda``).
"""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from streamlearn.errors import ConfigError
from streamlearn.learners import Learner, make_learner, mlp, small_cnn
from tests.learners.equality import CASES, IDS, learned, mnist_like, state
from tests.learners.test_contract import ON_CUDA

DEVICES = ["cpu", pytest.param("cuda", marks=ON_CUDA)]


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_same_model(reference: Learner, device: Learner, untrained: Learner) -> None:
    assert (reference.path, device.path) == ("reference", "device")
    moved = float((state(reference) - state(untrained)).abs().max())
    assert moved > 1e-2  # the comparison below is not between models that never learned
    diff = float((state(reference) - state(device)).abs().max())
    assert diff < 1e-5, diff
    assert reference.buffer is not None and device.buffer is not None
    assert torch.equal(reference.buffer.x.cpu(), device.buffer.x.cpu())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,hp", CASES, ids=IDS)
def test_device_path_agrees_with_the_reference_after_200_examples(name, hp, device) -> None:
    x, y = mnist_like(200)
    assert_same_model(
        learned(name, False, hp, x, y, device=device),
        learned(name, "device", hp, x, y, device=device),
        learned(name, False, hp, x[:0], y[:0], device=device),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "name,hp",
    [
        ("mer", dict(batches_per_example=2, grad_clip_norm=1.0)),
        ("lamaml", dict(second_order=True, glances=2)),
        ("cmaml", {}),
    ],
)
def test_device_path_agrees_on_a_cnn(name, hp, device) -> None:
    """Any module: the small CNN on 8x8 images (the lean kernels cannot run it at all)."""
    x, y = mnist_like(100, n_inputs=64)

    def cnn() -> torch.nn.Module:
        return small_cnn((1, 8, 8), 10, channels=4)

    assert_same_model(
        learned(name, False, hp, x, y, device=device, model=cnn()),
        learned(name, "device", hp, x, y, device=device, model=cnn()),
        learned(name, False, hp, x[:0], y[:0], device=device, model=cnn()),
    )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name,hp", [CASES[1], CASES[3], CASES[7]], ids=["mer", "lamaml", "cmaml"])
def test_cuda_graphs_replay_the_same_maths(name, hp) -> None:
    """fast_path "cuda_graph": each update captured once per input shape, then replayed."""
    x, y = mnist_like(200)
    graphed = learned(name, "cuda_graph", hp, x, y, device="cuda")
    assert graphed.cuda_graphs  # shapes were captured (one per replay-memory size while it filled)
    assert_same_model(
        learned(name, False, hp, x, y, device="cuda"),
        graphed,
        learned(name, False, hp, x[:0], y[:0], device="cuda"),
    )


def test_cuda_graphs_need_a_cuda_device() -> None:
    with pytest.raises(ValueError, match="fast_path='cuda_graph' needs a CUDA device, not cpu"):
        make_learner("mer", mlp(6, 3, (5,)), n_classes=3, fast_path="cuda_graph")


class HostReads(TorchFunctionMode):
    """Counts the tensor calls that hand a value to Python: on a GPU each one waits for the device."""

    READS = frozenset({"item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__"})

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "name,hp",
    [
        ("mer", dict(grad_clip_norm=0.5, gamma=0.6, memories=20, replay_batch_size=4)),
        ("lamaml", dict(memories=20, replay_batch_size=4, glances=2)),
        ("cmaml", dict(memories=20, replay_batch_size=4, glances=2)),
    ],
)
def test_one_host_read_per_update(name, hp) -> None:
    x, y = mnist_like(40, n_inputs=16)
    reads = {}
    for path in ("device", False):
        learner = make_learner(name, mlp(16, 10, (8,)), n_classes=10, fast_path=path, **hp)
        bs = learner.default_batch_size
        learner.learn(x[:bs], y[:bs])  # the first update builds the guard's copies
        with HostReads() as seen:
            for i in range(bs, 4 * bs, bs):
                stats = learner.learn(x[i : i + bs], y[i : i + bs])
        reads[path] = seen.reads
        assert stats.undone is None and stats.loss > 0 and not stats.on_device
    assert reads["device"] == ["tolist"] * 3  # the guard's read, carrying the loss and rate stats
    assert len(reads[False]) > 6  # the reference path reads as it goes (what the count would catch)


def test_device_path_reports_what_the_reference_reports() -> None:
    x, y = mnist_like(20, n_inputs=16)
    out = []
    for path in ("device", False):
        learner = make_learner("lamaml", mlp(16, 10, (8,)), n_classes=10, fast_path=path, glances=2)
        out.append(learner.learn(x[:10], y[:10]))
    assert out[0].loss == pytest.approx(out[1].loss, abs=1e-6)
    assert out[0].lr_stats == pytest.approx(out[1].lr_stats, abs=1e-7)
    assert set(out[0].lr_stats) == {"mean", "min", "max"}


def test_device_path_is_the_default_off_the_cpu_and_opt_in_on_it() -> None:
    assert make_learner("mer", mlp(6, 3, (5,)), n_classes=3).path == "numpy"
    assert make_learner("mer", mlp(6, 3, (5,)), n_classes=3, fast_path="device").path == "device"
    cnn = make_learner("lamaml", small_cnn((1, 8, 8), 3, channels=2), n_classes=3, fast_path="device")
    assert (cnn.path, cnn.fast_path) == ("device", False)
    if torch.cuda.is_available():
        assert make_learner("cmaml", mlp(6, 3, (5,)), n_classes=3, device="cuda").path == "device"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_device_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="device: 'cuda': no CUDA device is available here"):
        make_learner("mer", mlp(6, 3, (5,)), n_classes=3, device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["mer", "lamaml", "cmaml"])
def test_on_cuda_an_update_synchronises_once(name) -> None:
    """torch's sync debug mode warns at each operation that waits for the GPU: one per update."""
    x, y = mnist_like(40)
    learner = make_learner(name, mlp(784, 10, (48, 32)), n_classes=10, device="cuda", memories=20)
    bs = learner.default_batch_size
    xs, ys = x.cuda(), y.cuda()
    learner.learn(xs[:bs], ys[:bs])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with pytest.warns(UserWarning) as caught:
            for i in range(bs, 4 * bs, bs):
                learner.learn(xs[i : i + bs], ys[i : i + bs])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 3, [str(w.message) for w in syncs]

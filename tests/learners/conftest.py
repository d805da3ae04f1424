from collections.abc import Iterator

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture
def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """An easy 3-class problem in 6 dimensions (non-negative, MNIST-like scale)."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[1.0, 0, 0, 0.5, 0, 0], [0, 1.0, 0, 0, 0.5, 0], [0, 0, 1.0, 0, 0, 0.5]])
    y = torch.randint(0, 3, (600,), generator=g)
    x = (centers[y] + 0.15 * torch.randn(600, 6, generator=g)).clamp(min=0)
    return x, y


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One BLAS and torch thread, as the daemon runs (runtime.pin_threads): 10x faster here.

    A module takes it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)

import pytest
import torch


@pytest.fixture
def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """An easy 3-class problem in 6 dimensions (non-negative, MNIST-like scale)."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[1.0, 0, 0, 0.5, 0, 0], [0, 1.0, 0, 0, 0.5, 0], [0, 0, 1.0, 0, 0, 0.5]])
    y = torch.randint(0, 3, (600,), generator=g)
    x = (centers[y] + 0.15 * torch.randn(600, 6, generator=g)).clamp(min=0)
    return x, y

"""Helpers for the style tests on the tiny pipeline: one thread and seeded pictures."""

import numpy as np
import pytest
import torch


STEPS = 5


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads ran these tiny UNets ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _picture(seed: int, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """A smooth random colour picture (blocks upsampled), uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    height, width = size[1], size[0]
    blocks = rng.random((4, 4, 3))
    image = np.kron(blocks, np.ones((height // 4 + 1, width // 4 + 1, 1)))[:height, :width]
    return (image * 255).astype(np.uint8)

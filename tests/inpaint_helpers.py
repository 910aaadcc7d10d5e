"""Helpers for the inpainting tests on the tiny pipeline: one thread, a picture, a hole, a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddim_edit.inversion import InversionOptions
from ddim_edit.workflow import PreparedImage, invert_image, make_schedule


STEPS = 4
PROMPT = "a red circle on a white background"


def source_pixels() -> np.ndarray:
    rng = np.random.default_rng(3)
    pixels = np.full((32, 32, 3), 245, np.uint8)
    pixels[8:24, 10:26] = (220, 40, 40)
    return np.clip(pixels.astype(int) + rng.integers(-10, 10, pixels.shape), 0, 255).astype(np.uint8)


def hole() -> np.ndarray:
    mask = np.zeros((32, 32), bool)
    mask[4:14, 12:22] = True
    return mask


def invert(model, method="exact", prompt=PROMPT, pixels=None):
    pixels = source_pixels() if pixels is None else pixels
    prepared = PreparedImage(pixels, (32, 32), {})
    return invert_image(model, prepared, prompt, make_schedule(model, STEPS), InversionOptions(method=method),
                        progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads can make a tiny UNet call
    ~100x slower (they wait for each other); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model(tiny_pipe):
    """One model for the module (the UNet-evaluation counter is read as differences)."""
    from ddim_edit.model import EditModel

    return EditModel.from_pipeline(tiny_pipe, name="tiny")

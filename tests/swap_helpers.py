"""Helpers for the prompt-swap tests on the tiny pipeline: its prompts and inverted trajectories."""

import pytest
import torch

from ddim_edit.inversion import InversionOptions, invert
from ddim_edit.workflow import make_schedule


SOURCE = "a red circle on a white background"
TARGET = "a blue circle on a white background"


@pytest.fixture(scope="module")
def trajectories(tiny_pipe):
    from ddim_edit.model import EditModel

    model = EditModel.from_pipeline(tiny_pipe, name="tiny")
    schedule = make_schedule(model, 4)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    return model, {method: invert(model, schedule, z0, SOURCE, InversionOptions(method=method), progress=False)
                   for method in ("exact", "ddim")}

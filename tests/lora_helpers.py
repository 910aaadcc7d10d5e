"""Helpers shared by the fingerprint, LoRA and model tests: a short inversion on the tiny pipeline."""

import torch

from ddim_edit.inversion import InversionOptions, invert
from ddim_edit.schedule import Schedule


PROMPT = "a red circle on a white background"


def _invert(model, steps=4):
    schedule = Schedule.from_scheduler_config(model.scheduler_config, num_steps=steps)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    return invert(model, schedule, z0, PROMPT, InversionOptions(method="exact"), progress=False)

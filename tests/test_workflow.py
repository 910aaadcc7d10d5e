"""The workflow steps (ddim_edit/workflow.py): decoding refuses non-finite latents."""

from __future__ import annotations

import pytest
import torch

from ddim_edit.errors import NonFiniteError


def test_decode_refuses_non_finite_latents(tiny_model):
    from ddim_edit.workflow import decode

    latents = torch.zeros(1, 4, 8, 8)
    assert decode(tiny_model, latents).shape == (32, 32, 3)
    latents[0, 1, 2, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        decode(tiny_model, latents)

"""The edits of the job layer, one line each: adding an edit is its module plus a line here."""

from __future__ import annotations

from typing import Any

import torch

from . import inpaint, invert, reconstruct, style, swap
from .requests import EditSpec, JobResult

EDIT_SPECS: dict[str, EditSpec] = {spec.name: spec for spec in (
    invert.EDIT,
    reconstruct.EDIT,
    swap.EDIT,
    inpaint.EDIT,
    style.EDIT,
)}
EDITS = tuple(EDIT_SPECS)


def run_request(request: Any, models: Any) -> JobResult:
    """Run any request with its edit's runner, seeding torch with the request's seed first."""
    torch.manual_seed(request.settings.seed)
    return EDIT_SPECS[request.edit].run(request, models)

"""A manifest job's fields → the request of its edit (the same defaults as the single commands)."""

from __future__ import annotations

from typing import Any

from ..edits.inpaint import InpaintOptions
from ..edits.prompt_swap import SwapOptions
from ..edits.style import StyleOptions
from ..masks import MaskOptions
from ..options import from_values
from .manifest import Job
from .requests import (InpaintRequest, InvertRequest, JobSettings, ReconstructRequest, Request, StyleRequest,
                       SwapRequest)

SETTING_KEYS = ("model", "model_config", "steps", "spacing", "timesteps", "method", "guidance", "inversion_guidance",
                "negative_prompt", "fixed_point_iterations", "tolerance", "null_text_steps", "size", "seed",
                "keep_working_size", "trajectory_storage")


def job_settings(fields: dict[str, Any], defaults: JobSettings = JobSettings()) -> JobSettings:
    """The job's shared settings: its own keys over the batch's defaults."""
    import dataclasses

    return dataclasses.replace(defaults, **{key: fields[key] for key in SETTING_KEYS if key in fields})


def caption(fields: dict[str, Any], key: str) -> str | None:
    """The caption to invert with: "" when ``unconditional``, else the key's value (None if absent)."""
    return "" if fields.get("unconditional") else fields.get(key)


def build_request(job: Job, defaults: JobSettings = JobSettings(), force: bool = False) -> Request:
    """The request for ``job`` (options the job leaves out keep the single command's defaults);
    ``force`` lets a swap's saved trajectory replace an existing file."""
    f = job.fields
    settings = job_settings(f, defaults)
    if job.edit == "invert":
        return InvertRequest(f["image"], caption(f, "prompt"), settings)
    if job.edit == "reconstruct":
        return from_values(ReconstructRequest, f, parsed=True, source=f.get("trajectory") or f["image"],
                           prompt=caption(f, "prompt"), reference=f.get("source"), settings=settings)
    if job.edit == "swap":
        options = from_values(SwapOptions, f, parsed=True)
        return SwapRequest(f.get("trajectory") or f["image"], f["target_prompt"], f.get("source_prompt"), options,
                           save_trajectory=f.get("save_trajectory"), force=force, settings=settings)
    if job.edit == "inpaint":
        mask_options = from_values(MaskOptions, f, parsed=True)
        options = from_values(InpaintOptions, f, parsed=True, prompt=f.get("prompt"), guidance_scale=f.get("guidance"),
                              seed=settings.seed)
        return InpaintRequest(f["image"], f["mask"], caption(f, "source_prompt"), f.get("trajectory"), mask_options,
                              options, settings)
    options = from_values(StyleOptions, f, parsed=True, prompt=f.get("prompt") or "", guidance_scale=f.get("guidance"))
    return StyleRequest(f.get("content") or f["image"], f["style"], options, f.get("prompt") or "",
                        f.get("style_prompt"), settings)

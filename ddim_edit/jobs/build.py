"""A manifest job's fields → the request of its edit (the same defaults as the single commands)."""

from __future__ import annotations

from typing import Any

from ..edits.inpaint import InpaintOptions
from ..edits.prompt_swap import SwapOptions
from ..edits.style import StyleOptions, structure_spec
from ..masks import MaskOptions
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
        return ReconstructRequest(f.get("trajectory") or f["image"], caption(f, "prompt"), f.get("eta", 0.0),
                                  f.get("source"), settings)
    if job.edit == "swap":
        blend = () if f.get("no_blend") else (tuple(f["blend"]) if f.get("blend") else None)
        options = SwapOptions(mode=f.get("mode", "replace"), cross_steps=f.get("cross_steps", SwapOptions.cross_steps),
                              self_steps=f.get("self_steps", SwapOptions.self_steps), reweight=f.get("reweight", {}),
                              blend_words=blend, blend_latents=f.get("blend_latents", False),
                              blend_threshold=f.get("blend_threshold", SwapOptions.blend_threshold),
                              blend_change=f.get("blend_change", SwapOptions.blend_change),
                              late_guidance=f.get("late_guidance", SwapOptions.late_guidance),
                              mask_guidance=f.get("mask_guidance", SwapOptions.mask_guidance),
                              guidance_steps=f.get("guidance_steps", SwapOptions.guidance_steps))
        return SwapRequest(f.get("trajectory") or f["image"], f["target_prompt"], f.get("source_prompt"), options,
                           save_trajectory=f.get("save_trajectory"), force=force, settings=settings)
    if job.edit == "inpaint":
        mask_options = MaskOptions(threshold=f.get("mask_threshold", 0.5), dilate=f.get("dilate", 0),
                                   feather=f.get("feather"), invert=f.get("invert_mask", False),
                                   resize=f.get("resize_mask", False))
        options = InpaintOptions(prompt=f.get("prompt"), known=f.get("blend", "shared"),
                                 start_step=f.get("start_step", 0.0), resample=f.get("resample", 0),
                                 jump_length=f.get("jump_length", 10), guidance_scale=f.get("guidance"),
                                 paste=not f.get("no_paste", False), seed=settings.seed,
                                 hole_start=f.get("hole_noise", "trajectory"))
        return InpaintRequest(f["image"], f["mask"], caption(f, "source_prompt"), f.get("trajectory"), mask_options,
                              options, settings)
    window = f.get("injection_window", (0.0, 1.0))
    layers = f.get("layers")
    options = StyleOptions(gamma=f.get("gamma", StyleOptions.gamma), temperature=f.get("temperature", 1.5),
                           layers=None if not layers or layers == ["styleid"] else tuple(layers),
                           structure_layers=structure_spec(f.get("structure_layers")),
                           injection_start=window[0], injection_end=window[1], adain=not f.get("no_adain", False),
                           inject_key_value=not f.get("no_kv_injection", False),
                           output_corrections=f.get("output_corrections", "content"), prompt=f.get("prompt") or "",
                           guidance_scale=f.get("guidance"))
    return StyleRequest(f.get("content") or f["image"], f["style"], options, f.get("prompt") or "",
                        f.get("style_prompt"), settings)

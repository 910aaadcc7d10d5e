"""The ``inpaint`` edit: regenerate a masked region of an image, keep the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..edits.inpaint import InpaintOptions, inpaint
from ..masks import MaskOptions, check_mask_file, prepare_mask
from ..options import from_values
from ..trajectory import Trajectory
from .advice import warn_toy_model
from .output_size import paste_at_size, size_of, to_size
from .requests import EditSpec, ImageInput, JobResult, JobSettings, base_parameters, caption, input_name, score
from .resolve import check_same_image, inversion_options, resolve_source


@dataclass(frozen=True)
class InpaintRequest:
    """Regenerate the masked region of ``image`` (white = regenerate); keep the rest.

    ``options.prompt`` None restores with the source prompt; ``trajectory`` reuses an inversion of
    ``image`` instead of inverting it with ``source_prompt``.
    """

    image: ImageInput
    mask: ImageInput
    source_prompt: str | None = None
    trajectory: str | Path | Trajectory | None = None
    mask_options: MaskOptions = MaskOptions()
    options: InpaintOptions = InpaintOptions()
    settings: JobSettings = JobSettings()
    edit: str = field(default="inpaint", init=False)


def run_inpaint(request: InpaintRequest, models: Any) -> JobResult:
    """Mask-blended inpainting; outside the mask (and its feather) the output is the original's pixels."""
    settings, options = request.settings, request.options
    if not isinstance(request.mask, np.ndarray):
        check_mask_file(request.mask, request.mask_options)  # missing, unreadable, empty, full: before the model

    def check(traj):
        if traj is not None:
            check_same_image(traj, request.image, str(request.trajectory))
        options.check(traj.num_steps if traj is not None else
                      len(settings.timesteps.split(",")) if settings.timesteps else settings.steps)

    with_trajectory = request.trajectory is not None
    source = resolve_source(request.trajectory if with_trajectory else request.image, request.source_prompt, settings,
                            models, prompt_field="source_prompt", image=request.image if with_trajectory else None,
                            check=check)
    model, original, pixels = source.model, source.given, source.working_pixels()
    mask = prepare_mask(request.mask, size_of(pixels), model.vae_scale_factor, request.mask_options,
                        image_size=size_of(original))
    warn_toy_model(model, [source.trajectory.metadata["prompt"] if with_trajectory else source.prompt, options.prompt],
                   [pixels])
    traj = source.invert(inversion_options(settings, source.model, "ddim"))
    result = inpaint(model, traj, pixels, mask, options, progress=settings.progress)
    size = source.output_size(size_of(pixels), original)
    if size == size_of(pixels):
        image = result.image
    elif options.paste:
        image = paste_at_size(result.generated, original, result.mask.soft)
    else:
        image = to_size(result.generated, size)
    info = result.info
    inversion_evaluations = source.inversion_evaluations
    record = {"prompt": info["prompt"], "blend": info["known"], "method": traj.method, "steps": info["steps"],
              "start_index": info["start_index"], "resample": info["resample"], "jump_length": info["jump_length"],
              "mask_coverage": round(info["mask_coverage"], 4), "paste": info["paste"],
              "psnr": score(image, original), "size": list(size), "working_size": list(size_of(pixels)),
              "unet_evaluations": inversion_evaluations + info["unet_evaluations"],
              "inpaint_unet_evaluations": info["unet_evaluations"],
              "inversion_unet_evaluations": inversion_evaluations, "seconds": source.seconds()}
    parameters = base_parameters("inpaint", model, settings, traj, size)
    parameters.update(image=input_name(request.image), mask=input_name(request.mask),
                      trajectory=input_name(request.trajectory), dilate=request.mask_options.dilate,
                      feather=info["feather"], target=info["prompt"], source=traj.metadata["prompt"],
                      **{k: info[k] for k in ("known", "hole_start", "start_index", "resample", "jump_length",
                                              "guidance", "paste", "seed")})
    binary = result.mask.binary.astype(np.uint8) * 255
    panels = {"input": to_size(original, size), "mask": to_size(np.repeat(binary[..., None], 3, axis=2), size),
              "inpainted": image}
    return JobResult("inpaint", image, traj, record, parameters, panels, result)


def build_inpaint(fields: dict[str, Any], settings: JobSettings, force: bool) -> InpaintRequest:
    options = from_values(InpaintOptions, fields, parsed=True, prompt=fields.get("prompt"),
                          guidance_scale=fields.get("guidance"), seed=settings.seed)
    return InpaintRequest(fields["image"], fields["mask"], caption(fields, "source_prompt"), fields.get("trajectory"),
                          from_values(MaskOptions, fields, parsed=True), options, settings)


EDIT = EditSpec("inpaint", run_inpaint, build_inpaint,
                keys={"image": str, "mask": str, "prompt": str, "source_prompt": str, "unconditional": bool,
                      "trajectory": str},
                required=(("image",), ("mask",)), suffix=".inpaint.png", options=(MaskOptions, InpaintOptions))

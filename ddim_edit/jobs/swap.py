"""The ``swap`` edit: prompt-to-prompt from an image (inverted first) or a trajectory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..edits.prompt_swap import SwapOptions, check_source_prompt, decoded, edited_image, swap
from ..errors import PromptError
from ..options import from_values
from .advice import warn_toy_model
from .output_size import blend_at_size, size_of, to_size
from .requests import EditSpec, JobResult, JobSettings, SourceInput, base_parameters, input_name, score
from .resolve import inversion_options, is_trajectory, resolve_source


@dataclass(frozen=True)
class SwapRequest:
    """Prompt-to-prompt edit of an image or trajectory: ``source_prompt`` → ``target_prompt``.

    Attributes:
        save_trajectory: write the inverted image's trajectory here as soon as it exists (an image
            input only; runs the exact method's record pass), so a failed edit still leaves it.
        force: ``save_trajectory`` may replace an existing file.
    """

    source: SourceInput
    target_prompt: str
    source_prompt: str | None = None
    options: SwapOptions = SwapOptions()
    save_trajectory: str | Path | None = None
    force: bool = False
    settings: JobSettings = JobSettings()
    edit: str = field(default="swap", init=False)


def run_swap(request: SwapRequest, models: Any) -> JobResult:
    """Prompt-to-prompt edit; with a blend, the source's own full-resolution pixels outside the mask."""
    settings, options = request.settings, request.options
    if is_trajectory(request.source) and request.save_trajectory is not None:
        raise PromptError("save_trajectory is for an image input; the trajectory already exists")
    source = resolve_source(request.source, request.source_prompt, settings, models, prompt_field="source_prompt",
                            check=lambda traj: traj is None or check_source_prompt(traj, request.source_prompt))
    model = source.model
    # the swap reads the recorded latents and corrects as it goes: the record pass is only for a saved file
    traj = source.invert(inversion_options(settings, model, record_corrections=request.save_trajectory is not None))
    if request.save_trajectory is not None:
        traj.save(request.save_trajectory, force=request.force, storage=settings.trajectory_storage)
    working_source = source.working_pixels()
    warn_toy_model(model, [request.source_prompt, request.target_prompt], [working_source])
    guidance = settings.guidance_for(source.from_trajectory, model)
    result = swap(model, traj, request.target_prompt, options, request.source_prompt, guidance,
                  progress=settings.progress)
    original = source.original()
    working_edit = edited_image(model, result, working_source, options)
    size = source.output_size(size_of(working_edit), original)
    if settings.keep_working_size or size == size_of(working_edit):
        image = working_edit
    elif result.blend_mask is not None and original is not None:
        image = blend_at_size(decoded(model, result, "target"), original, result.blend_mask,
                              options.blend_dilate, options.blend_feather, options.blend_change)
    else:
        image = to_size(working_edit, size)
    reconstruction = to_size(decoded(model, result, "source"), size)
    record = {"method": traj.method, "steps": traj.num_steps, "psnr": score(image, original), "size": list(size),
              "working_size": list(size_of(working_edit)), "unet_evaluations": result.unet_evaluations,
              "inversion_unet_evaluations": source.inversion_evaluations,
              "blend_fraction": None if result.blend_mask is None else float(result.blend_mask.float().mean()),
              "seconds": source.seconds()}
    parameters = base_parameters("swap", model, settings, traj, size)
    parameters.update(input=input_name(request.source),
                      source=traj.metadata["prompt"], target=request.target_prompt, mode=options.mode,
                      blend=list(result.blend_words), reweight=[f"{k}={v:g}" for k, v in options.reweight.items()],
                      cross_steps=options.cross_steps, self_steps=options.self_steps,
                      late_guidance=result.late_guidance,
                      guidance_steps=options.guidance_steps if result.late_guidance is not None else None,
                      mask_guidance=result.mask_guidance,
                      guidance=guidance if guidance is not None else traj.metadata["guidance_scale"])
    panels = {"source": to_size(original, size)} if original is not None else {}
    panels.update(reconstruction=reconstruction, edit=image)
    return JobResult("swap", image, traj, record, parameters, panels, result)


def build_swap(fields: dict[str, Any], settings: JobSettings, force: bool) -> SwapRequest:
    """``force`` lets the job's saved trajectory replace an existing file."""
    return SwapRequest(fields.get("trajectory") or fields["image"], fields["target_prompt"], fields.get("source_prompt"),
                       from_values(SwapOptions, fields, parsed=True), save_trajectory=fields.get("save_trajectory"),
                       force=force, settings=settings)


EDIT = EditSpec("swap", run_swap, build_swap,
                keys={"image": str, "trajectory": str, "source_prompt": str, "target_prompt": str,
                      "save_trajectory": str},
                required=(("image", "trajectory"), ("target_prompt",)), suffix=".swap.png", options=(SwapOptions,),
                settings=("common", "inversion", "storage"))

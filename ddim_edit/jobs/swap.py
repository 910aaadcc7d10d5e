"""The ``swap`` edit: prompt-to-prompt from an image (inverted first) or a trajectory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..edits.flowedit import FLOWEDIT, FlowEditOptions, branch_conditioning, flowedit
from ..edits.prompt_swap import SwapOptions, check_source_prompt, decoded, edited_image, swap, target_text
from ..errors import PromptError
from ..options import changed_options, from_values
from ..workflow import decode
from .advice import warn_toy_model
from .output_size import blend_at_size, size_of, to_size
from .requests import EditSpec, JobResult, JobSettings, SourceInput, base_parameters, input_name, score
from .resolve import inversion_options, is_trajectory, resolve_source


@dataclass(frozen=True)
class SwapRequest:
    """Prompt-to-prompt edit of an image or trajectory: ``source_prompt`` → ``target_prompt``.

    ``settings.method`` ``flowedit`` edits without inverting (:mod:`ddim_edit.edits.flowedit`, with
    ``flowedit``'s settings); every other method inverts and runs prompt-to-prompt (``options``).

    Attributes:
        save_trajectory: write the inverted image's trajectory here as soon as it exists (an image
            input only; runs the exact method's record pass), so a failed edit still leaves it.
        force: ``save_trajectory`` may replace an existing file.
    """

    source: SourceInput
    target_prompt: str
    source_prompt: str | None = None
    options: SwapOptions = SwapOptions()
    flowedit: FlowEditOptions = FlowEditOptions()
    save_trajectory: str | Path | None = None
    force: bool = False
    settings: JobSettings = JobSettings()
    edit: str = field(default="swap", init=False)


def check_swap_method(request: SwapRequest) -> None:
    """Refuse settings of the other swap method than the one chosen, in one line naming them."""
    is_flowedit = request.settings.method == FLOWEDIT
    stray = changed_options(request.options) if is_flowedit else changed_options(request.flowedit)
    if stray:
        other = "prompt-to-prompt's (--method exact, ddim, …)" if is_flowedit else "FlowEdit's (--method flowedit)"
        raise PromptError(f"{', '.join(stray)} {'is' if len(stray) == 1 else 'are'} {other}; drop "
                          f"{'it' if len(stray) == 1 else 'them'} or choose that method")
    if is_flowedit and request.save_trajectory is not None:
        raise PromptError("FlowEdit does not invert, so there is no trajectory to save; drop {field}",
                          field="save_trajectory")


def run_swap(request: SwapRequest, models: Any) -> JobResult:
    """Prompt-to-prompt edit; with a blend, the source's own full-resolution pixels outside the mask.
    FlowEdit (``settings.method`` ``flowedit``): :func:`run_flowedit`."""
    check_swap_method(request)
    if request.settings.method == FLOWEDIT:
        return run_flowedit(request, models)
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


def run_flowedit(request: SwapRequest, models: Any) -> JobResult:
    """FlowEdit of the image (or of a trajectory's z_0): no inversion, no attention control."""
    import torch

    settings = request.settings
    source = resolve_source(request.source, request.source_prompt, settings, models, prompt_field="source_prompt",
                            check=lambda traj: traj is None or check_source_prompt(traj, request.source_prompt))
    model = source.model
    target = target_text(request.target_prompt)
    x_src, schedule, prompt = source.clean_latents()
    working_source = source.working_pixels()
    warn_toy_model(model, [prompt, target], [working_source])
    size_hw = model.image_size(x_src)
    branches = [branch_conditioning(model, text, settings.negative_prompt, size_hw) for text in (prompt, target)]
    generator = torch.Generator().manual_seed(settings.seed)
    result = flowedit(model, schedule, x_src, *branches, request.flowedit, generator, settings.progress)
    working_edit = decode(model, result.latents)
    original = source.original()
    size = source.output_size(size_of(working_edit), original)
    image = working_edit if settings.keep_working_size else to_size(working_edit, size)
    source_guidance, target_guidance = request.flowedit.guidance(model)
    first, stop = request.flowedit.steps_edited(schedule.num_steps)
    record = {"method": FLOWEDIT, "steps": schedule.num_steps, "psnr": score(image, original), "size": list(size),
              "working_size": list(size_of(working_edit)), "unet_evaluations": result.unet_evaluations,
              "inversion_unet_evaluations": 0, "blend_fraction": None, "seconds": source.seconds()}
    parameters = base_parameters("swap", model, settings, source.trajectory, size)
    parameters.update(input=input_name(request.source), method=FLOWEDIT, sampler="FlowEdit",
                      steps=schedule.num_steps, prompt=prompt, source=prompt, target=target, n_max=schedule.num_steps - first,
                      n_min=schedule.num_steps - stop, n_avg=request.flowedit.n_avg,
                      source_guidance=source_guidance, target_guidance=target_guidance)
    panels = {"source": to_size(original, size)} if original is not None else {}
    panels.update(edit=image)
    return JobResult("swap", image, source.trajectory, record, parameters, panels, result)


def build_swap(fields: dict[str, Any], settings: JobSettings, force: bool) -> SwapRequest:
    """``force`` lets the job's saved trajectory replace an existing file."""
    return SwapRequest(fields.get("trajectory") or fields["image"], fields["target_prompt"], fields.get("source_prompt"),
                       from_values(SwapOptions, fields, parsed=True), from_values(FlowEditOptions, fields, parsed=True),
                       save_trajectory=fields.get("save_trajectory"),
                       force=force, settings=settings)


EDIT = EditSpec("swap", run_swap, build_swap,
                keys={"image": str, "trajectory": str, "source_prompt": str, "target_prompt": str,
                      "save_trajectory": str},
                required=(("image", "trajectory"), ("target_prompt",)), suffix=".swap.png", options=(SwapOptions, FlowEditOptions),
                settings=("common", "inversion", "storage"))

"""One function per edit: a request in, a :class:`~ddim_edit.jobs.requests.JobResult` out.

Each function resolves the image-or-trajectory input, takes the model from the request, the
trajectory or the bundled default (through a provider, see :mod:`ddim_edit.jobs.resolve`), runs
the library's edit and brings the result to the source's resolution. Nothing is written here
(see :mod:`ddim_edit.jobs.write`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np
import torch

from .. import __version__
from ..edits.inpaint import inpaint
from ..edits.prompt_swap import check_source_prompt, decoded, edited_image, swap
from ..edits.style import style_images
from ..errors import PromptError
from ..inversion import InversionOptions, require_caption
from ..masks import check_mask_file, prepare_mask
from ..metrics import psnr
from ..trajectory import Trajectory
from ..workflow import (PreparedImage, invert_image, make_schedule, prepare_pixels, reconstruct_image,
                        recorded_original_size, source_image_for)
from .advice import warn_toy_model
from .requests import (InpaintRequest, InvertRequest, JobResult, JobSettings, ReconstructRequest,
                       Request, StyleRequest, SwapRequest)
from .output_size import blend_at_size, output_size, paste_at_size, size_of, to_size
from .resolve import as_provider, check_same_image, is_trajectory, load_trajectory, original_pixels, read_image


# ---------------------------------------------------------------------- shared pieces
def inversion_options(settings: JobSettings, default_method: str = "exact", **changes: Any) -> InversionOptions:
    """The settings' inversion options (``None`` method/guidance: the edit's defaults)."""
    options = InversionOptions(
        method=settings.method or default_method,
        guidance_scale=settings.guidance_for(trajectory=False),
        inversion_guidance=settings.inversion_guidance, negative_prompt=settings.negative_prompt,
        fixed_point_iterations=settings.fixed_point_iterations, fixed_point_tolerance=settings.tolerance,
        null_text_steps=settings.null_text_steps)
    return dataclasses.replace(options, **changes)


def prepare(model, pixels: np.ndarray, source: dict | None, settings: JobSettings) -> PreparedImage:
    """The image fitted to the model (longer side ``settings.size`` or the native size)."""
    return prepare_pixels(model, pixels, settings.size, source)


def base_parameters(edit: str, model, settings: JobSettings, traj: Trajectory | None, size: tuple[int, int]) -> dict:
    """What every written image carries to re-run its edit."""
    meta = traj.metadata if traj is not None else {}
    return {"command": edit, "version": __version__, "model": model.name, "model_hash": model.fingerprint(),
            "method": meta.get("method"), "steps": len(traj.timesteps) if traj is not None else settings.steps,
            "seed": settings.seed, "prompt": meta.get("prompt"), "negative_prompt": meta.get("negative_prompt") or None,
            "size": list(size)}


def score(image: np.ndarray, original: np.ndarray | None) -> float | None:
    """PSNR of ``image`` against the source at the image's size (None without a source)."""
    if original is None:
        return None
    return psnr(image, to_size(original, size_of(image)))


def _evaluations(model) -> int:
    return int(model.unet_evaluations)


# ---------------------------------------------------------------------- invert
def run_invert(request: InvertRequest, models: Any) -> JobResult:
    """Invert an image to a trajectory (nothing is decoded)."""
    settings = request.settings
    pixels, source = read_image(request.image)
    prompt = require_caption(request.prompt)
    model = as_provider(models).get(settings.model, config=settings.model_config)
    schedule = make_schedule(model, settings.steps, settings.spacing, settings.timesteps)
    prepared = prepare(model, pixels, source, settings)
    warn_toy_model(model, [prompt], [prepared.pixels])
    start = time.perf_counter()
    traj = invert_image(model, prepared, prompt, schedule, inversion_options(settings), progress=settings.progress)
    record = {"method": traj.method, "steps": schedule.num_steps, "size": prepared.source["size"],
              "trajectory_storage": settings.trajectory_storage,
              "working_size": prepared.source["size"], "unet_evaluations": traj.metadata["unet_evaluations"],
              "seconds": round(time.perf_counter() - start, 3)}
    if traj.metadata.get("fixed_point_unconverged"):
        record["fixed_point_unconverged"] = traj.metadata["fixed_point_unconverged"]
    return JobResult("invert", None, traj, record, base_parameters("invert", model, settings, traj,
                                                                   tuple(prepared.source["size"])))


# ---------------------------------------------------------------------- reconstruct
def run_reconstruct(request: ReconstructRequest, models: Any) -> JobResult:
    """Replay a trajectory (an image is inverted first) and decode it at the source's size."""
    settings = request.settings
    provider = as_provider(models)
    given = None
    inversion_evaluations = 0
    if is_trajectory(request.source):
        traj = load_trajectory(request.source)
        model = provider.get(settings.model, traj, settings.model_config)
        start = time.perf_counter()
    else:
        given, source = read_image(request.source)
        prompt = require_caption(request.prompt)
        model = provider.get(settings.model, config=settings.model_config)
        start = time.perf_counter()
        schedule = make_schedule(model, settings.steps, settings.spacing, settings.timesteps)
        traj = invert_image(model, prepare(model, given, source, settings), prompt, schedule,
                            inversion_options(settings), progress=settings.progress)
        inversion_evaluations = traj.metadata["unet_evaluations"]
    before = _evaluations(model)
    replay_guidance = settings.guidance if is_trajectory(request.source) else None
    working = reconstruct_image(model, traj, replay_guidance, progress=settings.progress, eta=request.eta,
                                seed=settings.seed)
    evaluations = _evaluations(model) - before
    if request.reference is not None:
        original = read_image(request.reference)[0]
    else:
        original = original_pixels(traj, given)
    warn_toy_model(model, [traj.metadata["prompt"]], [original])
    known_size = size_of(original) if original is not None else recorded_original_size(traj)
    size = output_size(size_of(working), known_size, settings.keep_working_size)
    image = to_size(working, size)
    record = {"method": traj.method, "psnr": score(image, original), "size": list(size),
              "working_size": list(size_of(working)), "unet_evaluations": evaluations + inversion_evaluations,
              "inversion_unet_evaluations": inversion_evaluations, "seconds": round(time.perf_counter() - start, 3)}
    parameters = base_parameters("reconstruct", model, settings, traj, size)
    parameters.update(trajectory=str(request.source) if not isinstance(request.source, (Trajectory, np.ndarray)) else None,
                      guidance=replay_guidance if replay_guidance is not None else traj.metadata["guidance_scale"],
                      eta=request.eta)
    panels = {"source": to_size(original, size)} if original is not None else {}
    panels["reconstruction"] = image
    return JobResult("reconstruct", image, traj, record, parameters, panels)


# ---------------------------------------------------------------------- swap
def run_swap(request: SwapRequest, models: Any) -> JobResult:
    """Prompt-to-prompt edit; with a blend, the source's own full-resolution pixels outside the mask."""
    settings = request.settings
    provider = as_provider(models)
    from_trajectory = is_trajectory(request.source)
    if from_trajectory and request.save_trajectory is not None:
        raise PromptError("save_trajectory is for an image input; the trajectory already exists")
    given = None
    if from_trajectory:
        traj = load_trajectory(request.source)
        check_source_prompt(traj, request.source_prompt)
        model = provider.get(settings.model, traj, settings.model_config)
        start = time.perf_counter()
        working_source = source_image_for(traj)
        inversion_evaluations = 0
    else:
        given, source = read_image(request.source)
        source_prompt = require_caption(request.source_prompt, "source_prompt")
        model = provider.get(settings.model, config=settings.model_config)
        start = time.perf_counter()
        schedule = make_schedule(model, settings.steps, settings.spacing, settings.timesteps)
        prepared = prepare(model, given, source, settings)
        # the swap reads the recorded latents and corrects as it goes: the record pass is only for a saved file
        options = inversion_options(settings, record_corrections=request.save_trajectory is not None)
        before = _evaluations(model)
        traj = invert_image(model, prepared, source_prompt, schedule, options, progress=settings.progress)
        inversion_evaluations = _evaluations(model) - before
        if request.save_trajectory is not None:
            traj.save(request.save_trajectory, force=request.force, storage=settings.trajectory_storage)
        working_source = prepared.pixels
    warn_toy_model(model, [request.source_prompt, request.target_prompt], [working_source])
    guidance = settings.guidance_for(from_trajectory)
    result = swap(model, traj, request.target_prompt, request.options, request.source_prompt, guidance,
                  progress=settings.progress)
    original = original_pixels(traj, given)
    working_edit = edited_image(model, result, working_source, request.options)
    known_size = size_of(original) if original is not None else recorded_original_size(traj)
    size = output_size(size_of(working_edit), known_size, settings.keep_working_size)
    if settings.keep_working_size or size == size_of(working_edit):
        image = working_edit
    elif result.blend_mask is not None and original is not None:
        image = blend_at_size(decoded(model, result, "target"), original, result.blend_mask,
                              request.options.blend_dilate, request.options.blend_feather,
                              request.options.blend_change)
    else:
        image = to_size(working_edit, size)
    reconstruction = to_size(decoded(model, result, "source"), size)
    record = {"method": traj.method, "steps": traj.num_steps, "psnr": score(image, original), "size": list(size),
              "working_size": list(size_of(working_edit)), "unet_evaluations": result.unet_evaluations,
              "inversion_unet_evaluations": inversion_evaluations,
              "blend_fraction": None if result.blend_mask is None else float(result.blend_mask.float().mean()),
              "seconds": round(time.perf_counter() - start, 3)}
    options = request.options
    parameters = base_parameters("swap", model, settings, traj, size)
    parameters.update(input=_name(request.source),
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


# ---------------------------------------------------------------------- inpaint
def run_inpaint(request: InpaintRequest, models: Any) -> JobResult:
    """Mask-blended inpainting; outside the mask (and its feather) the output is the original's pixels."""
    settings = request.settings
    mask_is_file = not isinstance(request.mask, np.ndarray)
    if mask_is_file:
        check_mask_file(request.mask, request.mask_options)  # missing, unreadable, empty, full: before the model
    original, source = read_image(request.image)
    original_size = size_of(original)
    traj = None
    if request.trajectory is not None:
        traj = load_trajectory(request.trajectory)
        check_same_image(traj, request.image, str(request.trajectory))
    else:
        source_prompt = require_caption(request.source_prompt, "source_prompt")
    request.options.check(traj.num_steps if traj is not None else
                          len(settings.timesteps.split(",")) if settings.timesteps else settings.steps)
    model = as_provider(models).get(settings.model, traj, settings.model_config)
    start = time.perf_counter()
    factor = model.vae_scale_factor
    inversion_evaluations = 0
    if traj is None:
        prepared = prepare(model, original, source, settings)
        pixels = prepared.pixels
    else:
        pixels = to_size(original, (traj.latents.shape[-1] * factor, traj.latents.shape[-2] * factor))
    mask = prepare_mask(request.mask, size_of(pixels), factor, request.mask_options, image_size=original_size)
    warn_toy_model(model, [traj.metadata["prompt"] if traj is not None else source_prompt, request.options.prompt],
                   [pixels])
    if traj is None:
        schedule = make_schedule(model, settings.steps, settings.spacing, settings.timesteps)
        traj = invert_image(model, prepared, source_prompt, schedule, inversion_options(settings, "ddim"),
                            progress=settings.progress)
        inversion_evaluations = traj.metadata["unet_evaluations"]
    result = inpaint(model, traj, pixels, mask, request.options, progress=settings.progress)
    size = output_size(size_of(pixels), original_size, settings.keep_working_size)
    if size == size_of(pixels):
        image = result.image
    elif request.options.paste:
        image = paste_at_size(result.generated, original, result.mask.soft)
    else:
        image = to_size(result.generated, size)
    info = result.info
    evaluations = inversion_evaluations + info["unet_evaluations"]
    record = {"prompt": info["prompt"], "blend": info["known"], "method": traj.method, "steps": info["steps"],
              "start_index": info["start_index"], "resample": info["resample"], "jump_length": info["jump_length"],
              "mask_coverage": round(info["mask_coverage"], 4), "paste": info["paste"],
              "psnr": score(image, original), "size": list(size), "working_size": list(size_of(pixels)),
              "unet_evaluations": evaluations, "inpaint_unet_evaluations": info["unet_evaluations"],
              "inversion_unet_evaluations": inversion_evaluations, "seconds": round(time.perf_counter() - start, 3)}
    parameters = base_parameters("inpaint", model, settings, traj, size)
    parameters.update(image=_name(request.image), mask=_name(request.mask), trajectory=_name(request.trajectory),
                      dilate=request.mask_options.dilate, feather=info["feather"], target=info["prompt"],
                      source=traj.metadata["prompt"],
                      **{k: info[k] for k in ("known", "hole_start", "start_index", "resample", "jump_length",
                                              "guidance", "paste", "seed")})
    binary = result.mask.binary.astype(np.uint8) * 255
    panels = {"input": to_size(original, size), "mask": to_size(np.repeat(binary[..., None], 3, axis=2), size),
              "inpainted": image}
    return JobResult("inpaint", image, traj, record, parameters, panels, result)


# ---------------------------------------------------------------------- style
def run_style(request: StyleRequest, models: Any) -> JobResult:
    """StyleID style transfer; the output has the content image's resolution."""
    settings = request.settings
    sides, sources, originals = [], [], []
    for side in (request.content, request.style):
        if is_trajectory(side):
            traj = load_trajectory(side)
            sides.append(traj)
            sources.append(None)
            originals.append(None)
        else:
            pixels, source = read_image(side)
            sides.append(pixels)
            sources.append(source)
            originals.append(pixels)
    recorded = next((side for side in sides if isinstance(side, Trajectory)), None)
    model = as_provider(models).get(settings.model, recorded, settings.model_config)
    schedule = None if recorded is not None else make_schedule(model, settings.steps, settings.spacing, settings.timesteps)
    warn_toy_model(model, [request.prompt, request.style_prompt], originals)
    # the style edit reads only the inverted latents: no record pass for exact
    inversion = inversion_options(settings, guidance_scale=1.0 if settings.guidance is None else settings.guidance,
                                  record_corrections=False)
    start = time.perf_counter()
    outcome = style_images(model, sides[0], sides[1], schedule, prompt=request.prompt, style_prompt=request.style_prompt,
                           inversion=inversion, options=request.options, sources=tuple(sources),
                           progress=settings.progress)
    content_original = originals[0] if originals[0] is not None else original_pixels(outcome.content)
    known_size = size_of(content_original) if content_original is not None else recorded_original_size(outcome.content)
    size = output_size(size_of(outcome.output), known_size, settings.keep_working_size)
    image = to_size(outcome.output, size)
    record = dict(outcome.result.settings, layers=outcome.result.layers,
                  structure_layers=outcome.result.structure_layers,
                  injected_steps=len(outcome.result.injected_steps), method=outcome.content.method,
                  unet_evaluations=outcome.result.unet_evaluations,
                  inversion_unet_evaluations=outcome.inversion_evaluations, psnr=score(image, content_original),
                  size=list(size), working_size=list(size_of(outcome.output)),
                  seconds=round(time.perf_counter() - start, 3))
    parameters = base_parameters("style", model, settings, outcome.content, size)
    parameters.update(content=_name(request.content), style=_name(request.style), **{
        k: record[k] for k in ("gamma", "temperature", "adain", "layers", "structure_layers", "injection_window", "guidance", "steps",
                               "prompt", "output_corrections", "inject_key_value") if k in record})
    content_panel = outcome.content_source if outcome.content_source is not None else outcome.content_reconstruction
    style_panel = outcome.style_source if outcome.style_source is not None else outcome.style_reconstruction
    panels = {"content": to_size(content_panel, size), "style": to_size(style_panel, size), "output": image}
    return JobResult("style", image, outcome.content, record, parameters, panels, outcome)


def _name(side: Any) -> str | None:
    """A path input as text (None for arrays, loaded trajectories and absent inputs)."""
    return None if side is None or isinstance(side, (np.ndarray, Trajectory)) else str(side)


RUNNERS: dict[str, Callable[[Any, Any], JobResult]] = {
    "invert": run_invert, "reconstruct": run_reconstruct, "swap": run_swap, "inpaint": run_inpaint, "style": run_style,
}


def run_request(request: Request, models: Any) -> JobResult:
    """Run any request with its edit's function, seeding torch with the request's seed first."""
    torch.manual_seed(request.settings.seed)
    return RUNNERS[request.edit](request, models)

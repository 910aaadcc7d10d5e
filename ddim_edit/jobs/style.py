"""The ``style`` edit: the content of one image in the style of another (images or trajectories)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..edits.style import StyleOptions, style_images
from ..options import from_values
from ..trajectory import Trajectory
from ..workflow import make_schedule
from .advice import warn_toy_model
from .output_size import size_of, to_size
from .requests import EditSpec, JobResult, JobSettings, SourceInput, base_parameters, input_name, score
from .resolve import as_provider, inversion_options, original_pixels, read_source, sized_like_source


@dataclass(frozen=True)
class StyleRequest:
    """The content of ``content`` in the style of ``style`` (images or trajectories)."""

    content: SourceInput
    style: SourceInput
    options: StyleOptions = StyleOptions()
    prompt: str = ""
    style_prompt: str | None = None
    settings: JobSettings = JobSettings()
    edit: str = field(default="style", init=False)


def run_style(request: StyleRequest, models: Any) -> JobResult:
    """StyleID style transfer; the output has the content image's resolution.

    Both sides are inverted together by :func:`~ddim_edit.edits.style.style_images` (one batch), so
    each side is read here rather than through :func:`~.resolve.resolve_source`.
    """
    settings = request.settings
    sides, sources, originals = [], [], []
    for side in (request.content, request.style):
        traj, pixels, record = read_source(side)
        sides.append(traj if traj is not None else pixels)
        sources.append(record)
        originals.append(pixels)
    recorded = next((side for side in sides if isinstance(side, Trajectory)), None)
    model = as_provider(models).get(settings.model, recorded, settings.model_config)
    schedule = None if recorded is not None else make_schedule(model, settings.steps, settings.spacing, settings.timesteps)
    warn_toy_model(model, [request.prompt, request.style_prompt], originals)
    # the style edit reads only the inverted latents: no record pass for exact
    inversion = inversion_options(settings, model, guidance_scale=1.0 if settings.guidance is None else settings.guidance,
                                  record_corrections=False)
    start = time.perf_counter()
    outcome = style_images(model, sides[0], sides[1], schedule, prompt=request.prompt, style_prompt=request.style_prompt,
                           inversion=inversion, options=request.options, sources=tuple(sources),
                           progress=settings.progress)
    content_original = originals[0] if originals[0] is not None else original_pixels(outcome.content)
    size = sized_like_source(size_of(outcome.output), content_original, outcome.content, settings.keep_working_size)
    image = to_size(outcome.output, size)
    record = dict(outcome.result.settings, layers=outcome.result.layers,
                  structure_layers=outcome.result.structure_layers,
                  injected_steps=len(outcome.result.injected_steps), method=outcome.content.method,
                  unet_evaluations=outcome.result.unet_evaluations,
                  inversion_unet_evaluations=outcome.inversion_evaluations, psnr=score(image, content_original),
                  size=list(size), working_size=list(size_of(outcome.output)),
                  seconds=round(time.perf_counter() - start, 3))
    parameters = base_parameters("style", model, settings, outcome.content, size)
    parameters.update(content=input_name(request.content), style=input_name(request.style), **{
        k: record[k] for k in ("gamma", "temperature", "adain", "layers", "structure_layers", "injection_window",
                               "guidance", "steps", "prompt", "output_corrections", "inject_key_value") if k in record})
    content_panel = outcome.content_source if outcome.content_source is not None else outcome.content_reconstruction
    style_panel = outcome.style_source if outcome.style_source is not None else outcome.style_reconstruction
    panels = {"content": to_size(content_panel, size), "style": to_size(style_panel, size), "output": image}
    return JobResult("style", image, outcome.content, record, parameters, panels, outcome)


def build_style(fields: dict[str, Any], settings: JobSettings, force: bool) -> StyleRequest:
    options = from_values(StyleOptions, fields, parsed=True, prompt=fields.get("prompt") or "",
                          guidance_scale=fields.get("guidance"))
    return StyleRequest(fields.get("content") or fields["image"], fields["style"], options, fields.get("prompt") or "",
                        fields.get("style_prompt"), settings)


EDIT = EditSpec("style", run_style, build_style,
                keys={"image": str, "content": str, "style": str, "prompt": str, "style_prompt": str},
                required=(("image", "content"), ("style",)), suffix=".style.png", options=(StyleOptions,),
                settings=("common", "method"))

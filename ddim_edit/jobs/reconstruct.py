"""The ``reconstruct`` edit: replay a trajectory (an image is inverted first) and decode it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..options import from_values, option
from ..workflow import reconstruct_image
from .advice import warn_toy_model
from .requests import (EditSpec, ImageInput, JobResult, JobSettings, SourceInput, base_parameters, caption,
                       input_name, score)
from .output_size import size_of, to_size
from .resolve import read_image, resolve_source


@dataclass(frozen=True)
class ReconstructRequest:
    """Regenerate a trajectory (or an image, inverted first with ``prompt``) through the sampler.

    Attributes:
        eta: DDIM η (0: deterministic; > 0 seeded by the settings' seed).
        reference: the image to report PSNR against (default: the recorded source, if unchanged).
    """

    source: SourceInput
    prompt: str | None = None
    eta: float = option(0.0, minimum=0.0, example="0", help="DDIM η (0: deterministic; > 0 uses --seed).")
    reference: ImageInput | None = None
    settings: JobSettings = JobSettings()
    edit: str = field(default="reconstruct", init=False)


def run_reconstruct(request: ReconstructRequest, models: Any) -> JobResult:
    """Replay a trajectory (an image is inverted first) and decode it at the source's size."""
    settings = request.settings
    source = resolve_source(request.source, request.prompt, settings, models)
    model, traj = source.model, source.invert()
    before = int(model.unet_evaluations)
    replay_guidance = settings.guidance if source.from_trajectory else None
    working = reconstruct_image(model, traj, replay_guidance, progress=settings.progress, eta=request.eta,
                                seed=settings.seed)
    evaluations = int(model.unet_evaluations) - before
    original = read_image(request.reference)[0] if request.reference is not None else source.original()
    warn_toy_model(model, [traj.metadata["prompt"]], [original])
    size = source.output_size(size_of(working), original)
    image = to_size(working, size)
    inversion_evaluations = source.inversion_evaluations
    record = {"method": traj.method, "psnr": score(image, original), "size": list(size),
              "working_size": list(size_of(working)), "unet_evaluations": evaluations + inversion_evaluations,
              "inversion_unet_evaluations": inversion_evaluations, "seconds": source.seconds()}
    parameters = base_parameters("reconstruct", model, settings, traj, size)
    parameters.update(trajectory=input_name(request.source) if source.from_trajectory else None,
                      guidance=replay_guidance if replay_guidance is not None else traj.metadata["guidance_scale"],
                      eta=request.eta)
    panels = {"source": to_size(original, size)} if original is not None else {}
    panels["reconstruction"] = image
    return JobResult("reconstruct", image, traj, record, parameters, panels)


def build_reconstruct(fields: dict[str, Any], settings: JobSettings, force: bool) -> ReconstructRequest:
    return from_values(ReconstructRequest, fields, parsed=True, source=fields.get("trajectory") or fields["image"],
                       prompt=caption(fields, "prompt"), reference=fields.get("source"), settings=settings)


EDIT = EditSpec("reconstruct", run_reconstruct, build_reconstruct,
                keys={"trajectory": str, "image": str, "prompt": str, "unconditional": bool, "source": str},
                required=(("trajectory", "image"),), suffix=".recon.png", options=(ReconstructRequest,))

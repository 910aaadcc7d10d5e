"""The ``invert`` edit: an image → its trajectory (nothing is decoded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .advice import warn_toy_model
from .requests import EditSpec, ImageInput, JobResult, JobSettings, base_parameters, caption
from .resolve import resolve_source


@dataclass(frozen=True)
class InvertRequest:
    """Invert ``image`` with its caption ``prompt`` ("" for unconditional inversion)."""

    image: ImageInput
    prompt: str
    settings: JobSettings = JobSettings()
    edit: str = field(default="invert", init=False)


def run_invert(request: InvertRequest, models: Any) -> JobResult:
    """Invert an image to a trajectory."""
    settings = request.settings
    source = resolve_source(request.image, request.prompt, settings, models, trajectories=False)
    size = source.prepared.source["size"]
    warn_toy_model(source.model, [source.prompt], [source.prepared.pixels])
    traj = source.invert()
    record = {"method": traj.method, "steps": traj.num_steps, "size": size,
              "trajectory_storage": settings.trajectory_storage, "working_size": size,
              "unet_evaluations": source.inversion_evaluations, "seconds": source.seconds()}
    if traj.metadata.get("fixed_point_unconverged"):
        record["fixed_point_unconverged"] = traj.metadata["fixed_point_unconverged"]
    return JobResult("invert", None, traj, record, base_parameters("invert", source.model, settings, traj, tuple(size)))


def build_invert(fields: dict[str, Any], settings: JobSettings, force: bool) -> InvertRequest:
    return InvertRequest(fields["image"], caption(fields, "prompt"), settings)


EDIT = EditSpec("invert", run_invert, build_invert, keys={"image": str, "prompt": str, "unconditional": bool},
                required=(("image",),), suffix=".traj.safetensors", settings=("common", "inversion", "storage"))

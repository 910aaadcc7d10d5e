"""Resolving a request's inputs: which model, image or trajectory, and the source's pixels.

Model loading lives in :func:`load_job_model` only, so that a change in how a model reference is
resolved (LoRA, model paths recorded in trajectories) is made in one place. An edit's
image-or-trajectory input is resolved once, by :func:`resolve_source`, into a :class:`JobSource`
that inverts the image on demand and gives the working and original pixels.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..edits.flowedit import FLOWEDIT
from ..errors import ImageError, PromptError, TrajectoryError
from ..images import load_image
from ..inversion import InversionOptions, require_caption
from ..io import file_sha256
from ..model import MemoryOptions
from ..trajectory import Trajectory
from ..workflow import (PreparedImage, invert_image, is_trajectory_path, make_schedule, original_image_for,
                        prepare_pixels, recorded_original_size, source_image_for)
from .output_size import output_size, size_of, to_size
from .requests import JobSettings

DEFAULT_MODEL = "toy"


def recorded_loras(trajectory: Trajectory) -> tuple[str, ...]:
    """The trajectory's LoRAs as ``PATH:SCALE`` specs (those whose recorded file still exists)."""
    records = trajectory.metadata.get("loras") or []
    return tuple(f"{r['path']}:{r['scale']!r}" for r in records if r.get("path") and Path(r["path"]).is_file())


def model_choice(reference: str | None, config: str | None, loras: tuple[str, ...],
                 trajectory: Trajectory | None) -> tuple[str, str | None, tuple[str, ...]]:
    """(model, config, LoRAs) a job runs on: ``reference``, else the trajectory's model with the
    config and LoRAs it records (unless given), else the bundled toy."""
    if reference is None and trajectory is not None:
        return (trajectory.metadata["model"], config or trajectory.metadata.get("model_config"),
                tuple(loras) or recorded_loras(trajectory))
    return reference or DEFAULT_MODEL, config, tuple(loras)


def load_job_model(reference: str | None, device: str = "auto", dtype: str = "auto", allow_pickle: bool = False,
                   config: str | None = None, trajectory: Trajectory | None = None, loras: tuple[str, ...] = (),
                   memory: MemoryOptions = MemoryOptions()):
    """Load the model a job runs on (see :func:`model_choice`), with its LoRAs fused."""
    from ..model import load_model

    reference, config, loras = model_choice(reference, config, loras, trajectory)
    return load_model(reference, device, dtype, allow_pickle, config, loras=loras, memory=memory)


@dataclass
class ModelCache:
    """Loads each model a process needs once and keeps the ``capacity`` most recently used.

    Attributes:
        device, dtype, allow_pickle, config: how models are loaded (see :func:`load_job_model`).
        loras: LoRA specs (``FILE[:SCALE]``) fused into every model this cache loads (a model taken
            from a trajectory gets the trajectory's own LoRAs when this is empty).
        memory: VAE tiling/slicing and CPU offload.
        default: the model of jobs that name none (None: the trajectory's, else the toy).
    """

    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    config: str | None = None
    default: str | None = None
    capacity: int = 2
    loras: tuple[str, ...] = ()
    memory: MemoryOptions = MemoryOptions()

    def __post_init__(self) -> None:
        self._models: OrderedDict[tuple, Any] = OrderedDict()
        self.loads = 0
        self._evicted_evaluations = 0

    def unet_evaluations(self) -> int:
        """UNet evaluations of every model this cache has loaded, so far."""
        return self._evicted_evaluations + sum(int(model.unet_evaluations) for model in self._models.values())

    def models(self) -> list[Any]:
        """The models held now."""
        return list(self._models.values())

    def get(self, reference: str | None = None, trajectory: Trajectory | None = None, config: str | None = None):
        """The model for a job: ``reference`` (or the cache's default), else the trajectory's."""
        key = model_choice(reference or self.default, config or self.config, self.loras, trajectory)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = load_job_model(key[0], self.device, self.dtype, self.allow_pickle, key[1], loras=key[2],
                               memory=self.memory)
        self.loads += 1
        self._models[key] = model
        while len(self._models) > self.capacity:
            _, evicted = self._models.popitem(last=False)
            self._evicted_evaluations += int(evicted.unet_evaluations)
        return model


class FixedModel:
    """A provider that always answers with one loaded model (Python users, tests)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def get(self, reference: str | None = None, trajectory: Trajectory | None = None, config: str | None = None):
        return self.model


def as_provider(models: Any) -> Any:
    """A ModelCache/FixedModel as is; a loaded model wrapped in :class:`FixedModel`."""
    return models if hasattr(models, "get") and not hasattr(models, "unet") else FixedModel(models)


def check_input_file(path: str | Path, what: str = "image") -> Path:
    """An existing file, or an :class:`ImageError` that says what to do (a folder points at ``batch``)."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{what} {path} is a folder; give one {what} file, or list the files in a manifest "
                         "(one JSON line each) and run `ddim-edit batch MANIFEST --out DIR`")
    if not path.exists():
        raise ImageError(f"{what} {path} does not exist; check the path")
    return path


def is_trajectory(source: Any) -> bool:
    """Whether ``source`` is a trajectory (loaded, or a ``.safetensors`` path)."""
    return isinstance(source, Trajectory) or (isinstance(source, (str, Path)) and is_trajectory_path(source))


def load_trajectory(source: str | Path | Trajectory) -> Trajectory:
    """A loaded trajectory as is, or the file loaded (checked by :meth:`Trajectory.load`)."""
    if isinstance(source, Trajectory):
        return source
    check_input_file(source, "trajectory")
    return Trajectory.load(source)


def read_image(source: str | Path | np.ndarray) -> tuple[np.ndarray, dict | None]:
    """Pixels uint8 [H, W, 3] and the record of the file they came from (None for arrays)."""
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise ImageError(f"an image array must be uint8 [H, W, 3], got {source.dtype} {list(source.shape)}")
        return source, None
    path = check_input_file(source)
    return load_image(path), {"path": str(path.resolve()), "sha256": file_sha256(path)}


def read_source(source: Any) -> tuple[Trajectory | None, np.ndarray | None, dict | None]:
    """(trajectory, None, None) for a trajectory (file or loaded), else (None, pixels, file record)."""
    if is_trajectory(source):
        return load_trajectory(source), None, None
    return (None, *read_image(source))


def sized_like_source(working: tuple[int, int], original: np.ndarray | None, trajectory: Trajectory | None,
                      keep_working_size: bool) -> tuple[int, int]:
    """(width, height) of an output: the source's (``original``, else the size the trajectory
    records), unless the working size is kept."""
    known = size_of(original) if original is not None else recorded_original_size(trajectory)
    return output_size(working, known, keep_working_size)


def original_pixels(traj: Trajectory, given: np.ndarray | None = None) -> np.ndarray | None:
    """The source image at its own size: ``given``, else the trajectory's recorded file if unchanged."""
    return given if given is not None else original_image_for(traj)


def check_same_image(traj: Trajectory, image: str | Path | np.ndarray, label: str) -> None:
    """Refuse a trajectory made from another file than ``image`` (when both are files with a record)."""
    recorded = (traj.metadata.get("source") or {}).get("sha256")
    if recorded and isinstance(image, (str, Path)) and recorded != file_sha256(image):
        raise TrajectoryError(f"{label} was made from another image than {image}; "
                              "pass the image it was inverted from, or drop {field} to invert this one",
                              field="trajectory")


# ---------------------------------------------------------------------- an edit's input, resolved once
def inversion_options(settings: JobSettings, model: Any, default_method: str = "exact",
                      **changes: Any) -> InversionOptions:
    """The settings' inversion options (``None`` method/guidance: the edit's and the model's defaults)."""
    if settings.method == FLOWEDIT:
        raise PromptError("{field} flowedit edits without inverting and is a swap method only; choose an inversion "
                          "method here (exact, ddim, …)", field="method")
    options = InversionOptions(
        method=settings.method or default_method,
        guidance_scale=settings.guidance_for(trajectory=False, model=model),
        inversion_guidance=settings.inversion_guidance, negative_prompt=settings.negative_prompt,
        fixed_point_iterations=settings.fixed_point_iterations, fixed_point_tolerance=settings.tolerance,
        null_text_steps=settings.null_text_steps)
    return dataclasses.replace(options, **changes)


@dataclass
class JobSource:
    """An edit's input resolved once: the model, and the trajectory given or the image to invert.

    Attributes:
        settings: the job's settings (schedule, size, inversion).
        model: the model the job runs on.
        trajectory: the trajectory given, or the image's once :meth:`invert` ran.
        given: the image's pixels at the file's own size (None for a trajectory alone).
        prepared: the image fitted to the model (None when a trajectory was given).
        prompt: the caption to invert the image with.
        inversion_evaluations: UNet evaluations :meth:`invert` spent (0 for a trajectory given).
        start: when the job's work began (after loading), for its ``seconds``.
    """

    settings: JobSettings
    model: Any
    trajectory: Trajectory | None = None
    given: np.ndarray | None = None
    prepared: PreparedImage | None = None
    prompt: str | None = None
    inversion_evaluations: int = 0
    start: float = field(default_factory=time.perf_counter)

    @property
    def from_trajectory(self) -> bool:
        """Whether a trajectory was given (nothing to invert)."""
        return self.prepared is None

    def invert(self, options: InversionOptions | None = None) -> Trajectory:
        """The trajectory: the one given, else the image inverted now (``options`` default: the settings')."""
        if self.trajectory is None:
            settings = self.settings
            schedule = make_schedule(self.model, settings.steps, settings.spacing, settings.timesteps,
                                     self.prepared.pixels.shape[:2])
            self.trajectory = invert_image(self.model, self.prepared, self.prompt, schedule,
                                           options or inversion_options(settings, self.model), progress=settings.progress)
            self.inversion_evaluations = self.trajectory.metadata["unet_evaluations"]
        return self.trajectory

    def clean_latents(self) -> tuple[Any, Any, str]:
        """(z_0 [1, C, h, w], the stepper, the caption) without inverting: the image VAE-encoded with the
        settings' schedule, or the trajectory's own z_0, schedule and prompt."""
        if self.trajectory is not None:
            from ..replay import trajectory_schedule

            traj = self.trajectory
            return traj.z_0[None].to(self.model.device), trajectory_schedule(self.model, traj), traj.metadata["prompt"]
        from ..images import to_tensor

        settings = self.settings
        schedule = make_schedule(self.model, settings.steps, settings.spacing, settings.timesteps,
                                 self.prepared.pixels.shape[:2])
        return self.model.encode_image(to_tensor(self.prepared.pixels)), schedule, self.prompt

    def working_pixels(self) -> np.ndarray | None:
        """The source at the model's working size: the fitted image, the given image at the trajectory's
        size, or the trajectory's recorded file (None when it is gone or changed)."""
        if self.prepared is not None:
            return self.prepared.pixels
        if self.given is not None:
            factor = self.model.vae_scale_factor
            latents = self.trajectory.latents
            return to_size(self.given, (latents.shape[-1] * factor, latents.shape[-2] * factor))
        return source_image_for(self.trajectory)

    def seconds(self) -> float:
        """Seconds since the work began, rounded to milliseconds (a record's ``seconds``)."""
        return round(time.perf_counter() - self.start, 3)

    def original(self) -> np.ndarray | None:
        """The source at its own size: the given image, else the trajectory's recorded file if unchanged."""
        return original_pixels(self.trajectory, self.given)

    def output_size(self, working: tuple[int, int], original: np.ndarray | None) -> tuple[int, int]:
        """(width, height) of the output (:func:`sized_like_source`)."""
        return sized_like_source(working, original, self.trajectory, self.settings.keep_working_size)


def resolve_source(source: Any, prompt: str | None, settings: JobSettings, models: Any, *,
                   prompt_field: str = "prompt", image: Any = None, trajectories: bool = True,
                   check: Callable[[Trajectory | None], None] | None = None) -> JobSource:
    """Read an edit's input and take its model (see :class:`JobSource`).

    Args:
        source: an image (file or pixels), or a trajectory (file or loaded) when ``trajectories``.
        prompt: the image's caption (refused when missing, naming ``prompt_field``).
        image: the image a trajectory ``source`` was inverted from (inpainting), read too.
        check: called with the trajectory (or None) after the inputs are read, before the model loads.
    """
    given = record = None
    if image is not None:
        given, record = read_image(image)
    traj, pixels, source_record = read_source(source) if trajectories else (None, *read_image(source))
    if traj is None:
        given, record = pixels, source_record
        prompt = require_caption(prompt, prompt_field)
    if check is not None:
        check(traj)
    model = as_provider(models).get(settings.model, traj, settings.model_config)
    if traj is not None:
        return JobSource(settings, model, trajectory=traj, given=given)
    return JobSource(settings, model, given=given, prompt=prompt,
                     prepared=prepare_pixels(model, given, settings.size, record))

"""What every edit's request shares and what a job gives back; how an edit is declared.

A request holds paths or arrays, prompts and options — nothing about click, files to write or
processes. Each edit is one module of this package (:mod:`.invert`, :mod:`.reconstruct`,
:mod:`.swap`, :mod:`.inpaint`, :mod:`.style`) that declares its request, its runner and its
manifest keys in an :class:`EditSpec`; :mod:`.registry` lists them. The single commands,
``ddim-edit batch`` and the web page all build requests and call :func:`~.registry.run_request`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from .. import __version__
from ..edits.flowedit import FLOWEDIT
from ..families import FLOW_FAMILIES
from ..inversion import InversionOptions
from ..metrics import psnr
from ..options import finite, option
from ..schedule import SPACINGS
from ..trajectory import METHODS, Trajectory
from .output_size import size_of, to_size

ImageInput = Union[str, Path, np.ndarray]
"""An image file, or uint8 RGB pixels [H, W, 3]."""
SourceInput = Union[str, Path, np.ndarray, Trajectory]
"""An image (file or pixels), a trajectory file (``.safetensors``) or a loaded :class:`Trajectory`."""

DEFAULT_GUIDANCE = InversionOptions.guidance_scale
"""The guidance of an inversion and its edits when a job names none, on the UNet families (a model
adapter may state its pipeline's own: ``EditModel.DEFAULT_GUIDANCE``)."""


def _timestep_text(value: Any, key: str, example: str) -> str:
    """Custom timesteps as the CLI's text: a manifest's list of numbers joined with commas."""
    if isinstance(value, list):
        return ",".join(str(int(finite(step, key, example))) for step in value)
    if isinstance(value, (dict, bool)):
        raise ValueError
    return str(value)


@dataclass(frozen=True)
class JobSettings:
    """What every edit shares: the model, the schedule and inversion of images, sizes, seed.

    ``None`` means "the edit's default": ``model`` → the trajectory's model, else the bundled toy;
    ``method`` → ``exact`` (``ddim`` for inpainting, whose blend never uses the exact corrections);
    ``guidance`` → the model's default (:data:`DEFAULT_GUIDANCE` on the UNet families, SD3's 7, FLUX.1's
    embedded 3.5, FLUX.2 [klein]'s 4, 1 when distilled) when inverting an image, the trajectory's own guidance
    when replaying one (:meth:`guidance_for`; style transfer: 1, no guidance, as StyleID).

    Each user-facing setting is declared once here (:func:`~ddim_edit.options.option`, grouped as
    ``common``, ``inversion`` and ``storage``): the commands' flags, the manifest's keys and
    :func:`~ddim_edit.options.from_values` read those declarations.

    Attributes:
        keep_working_size: return the image at the size the model worked at instead of the
            source's resolution and aspect ratio.
        trajectory_storage: how a trajectory the job writes is stored (``float64``, or ``float16``
            for the intermediate latents: see :meth:`Trajectory.save`).
        progress: progress bars on stderr.
    """

    model: str | None = option(None, kind=str, cli=False, group="common",
                               help="Hub id, local diffusers folder, .safetensors file, or 'toy' / 'toy-flow' (bundled).")
    model_config: str | None = option(None, kind=str, cli=False, group="common",
                                      help="Config folder for a single-file checkpoint (offline use).")
    steps: int = option(50, minimum=1, example="50", group="common", help="Number of DDIM steps.")
    spacing: str | None = option(None, kind=str, choices=SPACINGS, group="common",
                                 help="Timestep spacing (default: the model's scheduler config).")
    timesteps: str | None = option(None, kind=str, parse=_timestep_text, group="common",
                                   help="Custom descending list, e.g. '999,750,500,250,100,20'.")
    method: str | None = option(None, kind=str, choices=(*METHODS, FLOWEDIT), group="inversion",
                                help="Inversion method; swap also takes flowedit (an edit without inversion).")
    guidance: float | None = option(None, kind=float, example=f"{DEFAULT_GUIDANCE:g}", group="common",
                                    help="Guidance of replays and edits; the default shown is SD/SDXL's, other "
                                         "models take their own (SD3 7, FLUX.2 [klein] 4, FLUX.1 3.5 as its "
                                         "embedded guidance, a model input).")
    inversion_guidance: float | None = option(None, kind=float, example="1", group="inversion",
                                              help="Guidance while inverting (default 1; fixed-point: --guidance).")
    negative_prompt: str = option("", group="inversion", help="Negative prompt for guided replay.")
    fixed_point_iterations: int = option(10, minimum=1, group="inversion", help="fixed-point: most iterations per step.")
    tolerance: float = option(1e-5, minimum=0.0, example="1e-5", group="inversion",
                              help="fixed-point: relative change to stop at.")
    null_text_steps: int = option(10, minimum=1, group="inversion", help="null-text: most Adam steps per timestep.")
    size: int | None = option(None, kind=int, minimum=1, example="512", what="a positive image side in pixels",
                              group="common", help="Longer image side to work at (default: the model's).")
    seed: int = option(0, minimum=0, maximum=2**64 - 1, what="a seed in [0, 2^64 - 1]", group="common",
                       help="Seed for anything random (eta > 0).")
    keep_working_size: bool = option(False, group="common",
                                     help="Write the model's working size, not the source's resolution.")
    progress: bool = False
    trajectory_storage: str = option("float64", choices=("float64", "float16"), group="storage",
                                     help="float16: intermediate latents in float16, a file ~2.6x smaller; x_T, z_0 "
                                          "and corrections exact enough for replays.")

    def guidance_for(self, trajectory: bool, model: Any = None) -> float | None:
        """The guidance a job runs at: its own; else the ``model``'s default (:data:`DEFAULT_GUIDANCE`
        without one) for an image inverted now, and None (the recorded guidance) for a trajectory."""
        if self.guidance is not None:
            return self.guidance
        if trajectory:
            return None
        return DEFAULT_GUIDANCE if model is None else model.DEFAULT_GUIDANCE


@dataclass
class JobResult:
    """What one edit made.

    Attributes:
        edit: the edit's name (a key of :data:`~.registry.EDIT_SPECS`).
        image: uint8 [H, W, 3] output, at the source's resolution unless ``keep_working_size``
            (None for ``invert``).
        trajectory: the trajectory inverted or used.
        record: JSON-ready facts (sizes, method, steps, UNet evaluations, PSNR, seconds, …).
        parameters: what the written image carries to re-run the edit (see :mod:`ddim_edit.jobs.write`).
        panels: labelled pictures for comparison grids (source, reconstruction, mask, …), in order.
        details: the library's own result (SwapResult, InpaintResult, StyleOutcome) for callers that want more.
    """

    edit: str
    image: np.ndarray | None
    trajectory: Trajectory | None
    record: dict[str, Any]
    parameters: dict[str, Any]
    panels: dict[str, np.ndarray] = field(default_factory=dict)
    details: Any = None


@dataclass(frozen=True, eq=False)
class EditSpec:
    """One edit of the job layer, declared once; the manifest, the batch runner and
    :func:`~.registry.run_request` read it. Each spec is one object (compared and hashed by identity).

    Attributes:
        name: the manifest's ``edit`` value and the request's ``edit``.
        run: (request, models) → :class:`JobResult`; ``models``: a model cache, a provider or a model.
        build: (a manifest job's converted fields, its settings, force) → the request.
        keys: the manifest keys of its inputs and prompts, with their type (str or bool).
        options: the dataclasses whose declared options are keys too (see :mod:`ddim_edit.options`).
        settings: the :class:`JobSettings` groups (``common``, ``inversion``, ``storage``) or single
            settings it takes.
        required: each inner tuple: one of these keys must be given.
        suffix: the default output's suffix.
    """

    name: str
    run: Callable[[Any, Any], JobResult]
    build: Callable[[dict[str, Any], JobSettings, bool], Any]
    keys: dict[str, type]
    required: tuple[tuple[str, ...], ...]
    suffix: str
    options: tuple[type, ...] = ()
    settings: tuple[str, ...] = ("common", "inversion")


# ---------------------------------------------------------------------- pieces every runner uses
def caption(fields: dict[str, Any], key: str) -> str | None:
    """The caption a manifest job inverts with: "" when ``unconditional``, else the key's value (None if absent)."""
    return "" if fields.get("unconditional") else fields.get(key)


def base_parameters(edit: str, model, settings: JobSettings, traj: Trajectory | None, size: tuple[int, int]) -> dict:
    """What every written image carries to re-run its edit."""
    meta = traj.metadata if traj is not None else {}
    return {"command": edit, "version": __version__, "model": model.name, "model_hash": model.fingerprint(),
            "sampler": "Euler" if model.family in FLOW_FAMILIES else "DDIM",
            "method": meta.get("method"), "steps": len(traj.timesteps) if traj is not None else settings.steps,
            "seed": settings.seed, "prompt": meta.get("prompt"), "negative_prompt": meta.get("negative_prompt") or None,
            "size": list(size)}


def score(image: np.ndarray, original: np.ndarray | None) -> float | None:
    """PSNR of ``image`` against the source at the image's size (None without a source)."""
    if original is None:
        return None
    return psnr(image, to_size(original, size_of(image)))


def input_name(side: Any) -> str | None:
    """A path input as text (None for arrays, loaded trajectories and absent inputs)."""
    return None if side is None or isinstance(side, (np.ndarray, Trajectory)) else str(side)

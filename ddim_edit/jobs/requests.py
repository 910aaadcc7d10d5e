"""Plain requests for one edit each, and what a job gives back.

A request holds paths or arrays, prompts and options — nothing about click, files to write or
processes. :mod:`ddim_edit.jobs.edits` turns a request into a :class:`JobResult`; the single
commands, ``ddim-edit batch`` and a UI all build requests and call those functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..edits.inpaint import InpaintOptions
from ..edits.prompt_swap import SwapOptions
from ..edits.style import StyleOptions
from ..inversion import InversionOptions
from ..masks import MaskOptions
from ..options import option
from ..trajectory import Trajectory

ImageInput = Union[str, Path, np.ndarray]
"""An image file, or uint8 RGB pixels [H, W, 3]."""
SourceInput = Union[str, Path, np.ndarray, Trajectory]
"""An image (file or pixels), a trajectory file (``.safetensors``) or a loaded :class:`Trajectory`."""

DEFAULT_GUIDANCE = InversionOptions.guidance_scale
"""The guidance of an inversion and its edits when a job names none (the library's default)."""
EDITS = ("invert", "reconstruct", "swap", "inpaint", "style")


@dataclass(frozen=True)
class JobSettings:
    """What every edit shares: the model, the schedule and inversion of images, sizes, seed.

    ``None`` means "the edit's default": ``model`` → the trajectory's model, else the bundled toy;
    ``method`` → ``exact`` (``ddim`` for inpainting, whose blend never uses the exact corrections);
    ``guidance`` → :data:`DEFAULT_GUIDANCE` when inverting an image, the trajectory's own guidance
    when replaying one (:meth:`guidance_for`; style transfer: 1, no guidance, as StyleID).

    Attributes:
        keep_working_size: return the image at the size the model worked at instead of the
            source's resolution and aspect ratio.
        trajectory_storage: how a trajectory the job writes is stored (``float64``, or ``float16``
            for the intermediate latents: see :meth:`Trajectory.save`).
        progress: progress bars on stderr.
    """

    model: str | None = None
    model_config: str | None = None
    steps: int = 50
    spacing: str | None = None
    timesteps: str | None = None
    method: str | None = None
    guidance: float | None = None
    inversion_guidance: float | None = None
    negative_prompt: str = ""
    fixed_point_iterations: int = 10
    tolerance: float = 1e-5
    null_text_steps: int = 10
    size: int | None = None
    seed: int = 0
    keep_working_size: bool = False
    progress: bool = False
    trajectory_storage: str = "float64"

    def guidance_for(self, trajectory: bool) -> float | None:
        """The guidance a job runs at: its own; else :data:`DEFAULT_GUIDANCE` for an image inverted
        now, and None (the recorded guidance) for a trajectory."""
        if self.guidance is not None:
            return self.guidance
        return None if trajectory else DEFAULT_GUIDANCE


@dataclass(frozen=True)
class InvertRequest:
    """Invert ``image`` with its caption ``prompt`` ("" for unconditional inversion)."""

    image: ImageInput
    prompt: str
    settings: JobSettings = JobSettings()
    edit: str = field(default="invert", init=False)


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


Request = Union[InvertRequest, ReconstructRequest, SwapRequest, InpaintRequest, StyleRequest]


@dataclass
class JobResult:
    """What one edit made.

    Attributes:
        edit: the edit's name (one of :data:`EDITS`).
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

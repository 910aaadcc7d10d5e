"""Image-level workflow shared by the CLI, the benchmarks and Python users.

``prepare_image`` → ``invert_image`` → Trajectory → ``reconstruct_image``; the job layer
(:mod:`ddim_edit.jobs`) starts every edit from an image inverted once or a trajectory file as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ImageError
from .images import fit_size, load_image, resize_rgb, to_tensor, to_uint8
from .inversion import InversionOptions, invert
from .io import file_sha256
from .replay import reconstruct
from .schedule import Schedule, parse_custom_timesteps
from .trajectory import Trajectory

TRAJECTORY_SUFFIX = ".safetensors"


@dataclass
class PreparedImage:
    """An image read from disk and fitted to the model: pixels as used, and where they came from."""

    pixels: np.ndarray  # uint8 [H, W, 3] at the working size
    original_size: tuple[int, int]  # (width, height) of the file
    source: dict


def prepare_image(model, path: str | Path, size: int | None = None) -> PreparedImage:
    """Read ``path`` and resize it so both sides fit the model (longer side ``size``, default native).

    Raises:
        ImageError: (field ``size``) when ``size`` is not a positive side of at least the model's
            size multiple (the VAE factor times the UNet's down-sampling).
    """
    check_working_size(model, size)
    return prepare_pixels(model, load_image(path), size, {"path": str(Path(path).resolve()), "sha256": file_sha256(path)})


def check_working_size(model, size: int | None) -> None:
    """Raise :class:`ImageError` (field ``size``) for a working side below the model's size multiple."""
    if size is None:
        return
    multiple = model.size_multiple
    if isinstance(size, bool) or not isinstance(size, int) or size < multiple:
        raise ImageError(f"{{field}} {size!r} is too small: the model works on sides that are multiples of "
                         f"{multiple} px; use {{field}} {max(multiple, model.native_size)} or another multiple of "
                         f"{multiple} (default: {model.native_size})", field="size", value=size)


def prepare_pixels(model, pixels: np.ndarray, size: int | None = None, source: dict | None = None) -> PreparedImage:
    """Pixels (uint8 [H, W, 3]) fitted to the model like :func:`prepare_image` fits a file.

    ``source`` (path, sha256 of the file they came from) is kept in the trajectory's metadata.
    """
    check_working_size(model, size)
    height, width = pixels.shape[:2]
    fitted = fit_size(width, height, size or model.native_size, model.size_multiple)
    record = dict(source or {"path": None, "sha256": None})
    record.update(original_size=[width, height], size=list(fitted))
    return PreparedImage(resize_rgb(pixels, fitted), (width, height), record)


def make_schedule(model, steps: int, spacing: str | None = None, timesteps: str | None = None,
                  image_size: tuple[int, int] | None = None) -> Schedule:
    """The model's stepper: ``steps`` with ``spacing``, or a custom list, for images of ``image_size``
    (h, w) pixels (FLUX's shift depends on it; default: the model's native size)."""
    custom = parse_custom_timesteps(timesteps) if timesteps else None
    return model.make_schedule(steps, spacing, custom, image_size)


def invert_image(model, image: PreparedImage, prompt: str, schedule: Schedule,
                 options: InversionOptions = InversionOptions(), progress: bool = True) -> Trajectory:
    """VAE-encode the prepared image and invert it (a missing prompt is refused by :func:`invert`)."""
    z0 = model.encode_image(to_tensor(image.pixels))
    return invert(model, schedule, z0, prompt, options, source=image.source, progress=progress)


def reconstruct_image(model, traj: Trajectory, guidance_scale: float | None = None, progress: bool = True,
                      eta: float = 0.0, seed: int = 0) -> np.ndarray:
    """Replay the trajectory and decode: uint8 [H, W, 3] (``eta > 0``: stochastic, seeded)."""
    generator = torch.Generator().manual_seed(seed) if eta > 0 else None
    return decode(model, reconstruct(model, traj, guidance_scale, progress=progress, eta=eta, generator=generator))


def is_trajectory_path(path: str | Path) -> bool:
    return str(path).endswith(TRAJECTORY_SUFFIX)


def source_image_for(traj: Trajectory, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """The trajectory's source image at its working size, if the file is still there unchanged."""
    source = traj.metadata.get("source") or {}
    path = source.get("path")
    if not path or not Path(path).is_file() or file_sha256(path) != source.get("sha256"):
        return None
    image = load_image(path)
    fitted = tuple(source.get("size") or (image.shape[1], image.shape[0]))
    return resize_rgb(image, size or fitted)


def original_image_for(traj: Trajectory) -> np.ndarray | None:
    """The trajectory's source image at the file's own size, if the file is still there unchanged."""
    source = traj.metadata.get("source") or {}
    path = source.get("path")
    if not path or not Path(path).is_file() or file_sha256(path) != source.get("sha256"):
        return None
    return load_image(path)


def recorded_original_size(traj: Trajectory) -> tuple[int, int] | None:
    """(width, height) of the image the trajectory was inverted from, when recorded."""
    size = (traj.metadata.get("source") or {}).get("original_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(side, int) and side > 0 for side in size):
        return int(size[0]), int(size[1])
    return None


def decode(model, latents: torch.Tensor) -> np.ndarray:
    """Latents [1, C, h, w] → uint8 [H, W, 3]."""
    return to_uint8(model.decode_latents(latents))

"""Inpainting masks with OpenCV: read any image file, binarise, dilate, feather, fit the latent grid.

Convention: white (or opaque, for an image with a varying alpha channel) = the region to regenerate.

The pipeline, in pixels of the image the edit works at (``H × W``):

1. :func:`read_mask`: any file OpenCV decodes (PNG 8/16-bit, JPEG, BMP, TIFF, WebP, grayscale, RGB,
   RGBA) → float32 ``[h, w]`` in [0, 1]. A colour mask is read by luminance; an RGBA mask by its
   alpha channel when the alpha varies (a stroke layer exported on a transparent canvas).
2. :func:`fit_mask_size`: the mask must have the size of the image file (or of the working size);
   any other size is an error unless resizing is asked for.
3. :func:`binarise`, then :func:`dilate` (grow by ``dilate`` px, elliptical kernel).
4. :func:`feather`: a soft ramp that is 1 on the binary mask and falls to 0 *outside* it over
   ``feather`` px, so everything the user marked is regenerated in full and pixels farther than
   ``feather + ½`` px from the mask keep alpha 0 (the paste leaves them bit-exact).
5. :func:`latent_mask`: the soft mask on the latent grid (``H / f × W / f``) by area averaging
   (each latent cell gets the mean of its f × f pixels: no nearest-neighbour staircase, so no seam
   of half-covered cells), raised to 1 on every cell that touches the binary mask, because the VAE
   spreads a damaged pixel into its whole cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError
from .images import header_size, image_size_error
from .options import option

MAX_MASK_PIXELS = 40_000_000


class MaskError(ImageError):
    """A mask file is missing, unreadable, of the wrong size, empty or full."""


@dataclass(frozen=True)
class MaskOptions:
    """How a mask file becomes the edit's mask.

    Attributes:
        threshold: a pixel is masked when its value (0–1) is at least this.
        dilate: grow the binary mask by this many pixels (at the working size).
        feather: width in pixels of the soft ramp outside the mask; None: one latent cell.
        invert: swap masked and unmasked (black = regenerate).
        resize: accept a mask whose size differs from the image's, resizing it to fit.
    """

    dilate: int = option(0, minimum=0, help="Grow the mask by PX pixels.", web={"label": "Dilate (px)"})
    feather: int | None = option(None, kind=int, minimum=0,
                                 help="Soft edge outside the mask, PX pixels (default: one latent cell).",
                                 web={"label": "Feather (px; default: one latent cell)"})
    threshold: float = option(0.5, flag="--mask-threshold", help="Mask values ≥ this (0–1) are masked.")
    invert: bool = option(False, flag="--invert-mask", help="Black = regenerate instead of white.")
    resize: bool = option(False, flag="--resize-mask", help="Resize a mask whose size differs from the image's.")


@dataclass
class PreparedMask:
    """A mask at the working size and on the latent grid.

    Attributes:
        binary: bool ``[H, W]``, the binarised (and dilated) mask: what is regenerated in full.
        soft: float32 ``[H, W]`` in [0, 1], the feathered mask used for the final pixel paste.
        latent: float32 ``[h, w]`` in [0, 1], the blend weight m on the latent grid.
        feather: the feather width used, in pixels.
    """

    binary: np.ndarray
    soft: np.ndarray
    latent: np.ndarray
    feather: int

    @property
    def coverage(self) -> float:
        """Fraction of pixels in the binary mask."""
        return float(self.binary.mean())


def read_mask(path: str | Path) -> np.ndarray:
    """Read an image file as a mask: float32 ``[h, w]`` in [0, 1] (1 = regenerate).

    8-bit values are divided by 255, 16-bit by 65535; float images are taken as [0, 1] (or [0, 255]
    when their maximum exceeds 1). Colour images are read by luminance; images with an alpha channel
    that is not constant are read by their alpha.

    Raises:
        MaskError: the file is missing, empty, not an image OpenCV can decode, or too large.
    """
    path = Path(path)
    if path.is_dir():
        raise MaskError(f"mask {path} is a folder; give a mask image file (white = regenerate)")
    if not path.is_file():
        raise MaskError(f"mask {path} does not exist; check the --mask path")
    size = header_size(path)  # refuse a huge mask before OpenCV decodes it
    too_large = image_size_error(f"mask {path}", *size, limit=MAX_MASK_PIXELS) if size else None
    if too_large:
        raise MaskError(too_large)
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise MaskError(f"mask {path} is an empty file; give a PNG/JPEG/BMP/TIFF/WebP image (white = regenerate)")
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise MaskError(f"cannot read mask {path} as an image; give a PNG/JPEG/BMP/TIFF/WebP image (white = regenerate)")
    too_large = image_size_error(f"mask {path}", raw.shape[1], raw.shape[0], limit=MAX_MASK_PIXELS)
    if too_large:
        raise MaskError(too_large)
    if raw.ndim == 3 and raw.shape[2] == 4 and raw[..., 3].min() != raw[..., 3].max():
        values = raw[..., 3]
    elif raw.ndim == 3 and raw.shape[2] >= 3:
        # Decode again as grayscale so that OpenCV applies the EXIF orientation as for any image.
        values = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
        if values is None or values.shape[:2] not in (raw.shape[:2], raw.shape[1::-1]):
            values = cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2GRAY)
    elif raw.ndim == 3:  # gray + alpha
        values = raw[..., 0]
    else:
        values = raw
        oriented = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
        if oriented is not None and oriented.dtype == raw.dtype:
            values = oriented
    return _to_unit(values, path)


def _to_unit(values: np.ndarray, path: Path) -> np.ndarray:
    if values.dtype == np.uint8:
        return values.astype(np.float32) / 255.0
    if values.dtype == np.uint16:
        return values.astype(np.float32) / 65535.0
    if values.dtype == np.int8 or values.dtype == np.int16 or values.dtype == np.int32:
        peak = float(np.iinfo(values.dtype).max)
        return np.clip(values.astype(np.float32) / peak, 0.0, 1.0)
    if np.issubdtype(values.dtype, np.floating):
        values = np.nan_to_num(values.astype(np.float32))
        if values.max(initial=0.0) > 1.0:
            values = values / 255.0
        return np.clip(values, 0.0, 1.0)
    raise MaskError(f"mask {path} has unsupported pixel type {values.dtype}; save it as an 8-bit PNG")


def fit_mask_size(mask: np.ndarray, working_size: tuple[int, int], image_size: tuple[int, int] | None = None,
                  resize: bool = False, name: str = "mask") -> np.ndarray:
    """Bring a [0, 1] mask to the working size (width, height).

    A mask of the image file's size (``image_size``) or of the working size is resized as the image
    was; any other size is an error unless ``resize``. Downscaling averages areas (soft edges, no
    aliasing); upscaling is bilinear.

    Raises:
        MaskError: the size matches neither and ``resize`` is False.
    """
    height, width = mask.shape[:2]
    accepted = {tuple(working_size)} | ({tuple(image_size)} if image_size else set())
    if (width, height) not in accepted and not resize:
        expected = " or ".join(f"{w}x{h}" for w, h in sorted(accepted))
        raise MaskError(f"{name} is {width}x{height} but the image is {expected}; "
                        "draw the mask at the image's size or pass --resize-mask")
    if (width, height) == tuple(working_size):
        return mask.astype(np.float32)
    shrinking = width * height > working_size[0] * working_size[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.clip(cv2.resize(mask.astype(np.float32), tuple(working_size), interpolation=interpolation), 0.0, 1.0)


def binarise(mask: np.ndarray, threshold: float = 0.5, invert: bool = False) -> np.ndarray:
    """bool mask: value ≥ ``threshold`` (or < it, when ``invert``)."""
    if not 0.0 < threshold <= 1.0:
        raise MaskError(f"mask threshold must be in (0, 1], got {threshold}; e.g. --mask-threshold 0.5")
    binary = mask >= threshold
    return ~binary if invert else binary


def dilate(binary: np.ndarray, pixels: int) -> np.ndarray:
    """Grow a bool mask by ``pixels`` (elliptical kernel of diameter 2·pixels + 1)."""
    if pixels < 0:
        raise MaskError(f"dilation must be ≥ 0 pixels, got {pixels}")
    if pixels == 0:
        return binary.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(binary.astype(np.uint8), kernel).astype(bool)


def feather(binary: np.ndarray, pixels: int) -> np.ndarray:
    """Soft mask: 1 on ``binary``, falling smoothly to 0 over ``pixels`` px outside it.

    The ramp is a smoothstep of the Euclidean distance d to the mask: smoothstep((pixels + ½ − d) /
    pixels), so pixels within ``pixels`` px are soft and pixels farther than ``pixels + ½`` get exactly 0.
    """
    if pixels < 0:
        raise MaskError(f"feather must be ≥ 0 pixels, got {pixels}")
    soft = binary.astype(np.float32)
    if pixels == 0 or not binary.any():
        return soft
    distance = cv2.distanceTransform((~binary).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ramp = np.clip((pixels + 0.5 - distance) / pixels, 0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)
    return np.maximum(soft, ramp).astype(np.float32)


def latent_mask(soft: np.ndarray, binary: np.ndarray, latent_size: tuple[int, int]) -> np.ndarray:
    """The blend weight m on the latent grid (width, height): area average of ``soft``, 1 where a
    cell touches ``binary``."""
    area = cv2.resize(soft.astype(np.float32), tuple(latent_size), interpolation=cv2.INTER_AREA)
    touched = cv2.resize(binary.astype(np.float32), tuple(latent_size), interpolation=cv2.INTER_AREA) > 0
    return np.clip(np.where(touched, 1.0, area), 0.0, 1.0).astype(np.float32)


def prepare_mask(mask: np.ndarray | str | Path, working_size: tuple[int, int], latent_factor: int,
                 options: MaskOptions = MaskOptions(), image_size: tuple[int, int] | None = None) -> PreparedMask:
    """A mask file or [0, 1] array → :class:`PreparedMask` at the working size (width, height).

    Args:
        mask: a mask file path, or an array (bool, uint8, uint16 or float in [0, 1]).
        working_size: (width, height) the edit works at; both multiples of ``latent_factor``.
        latent_factor: pixels per latent cell (the VAE's scale factor: 8 for SD, 4 for the toy).
        options: threshold, dilation, feather, inversion, resizing.
        image_size: (width, height) of the image file, a size the mask may also have.

    Raises:
        MaskError: unreadable or wrong-size mask; empty mask (nothing to inpaint); full mask (that
            is plain generation).
    """
    name = "mask"
    if isinstance(mask, (str, Path)):
        name = f"mask {Path(mask).name}"
        values = read_mask(mask)
    else:
        values = _to_unit(np.asarray(mask) if np.asarray(mask).dtype != bool else np.asarray(mask).astype(np.uint8) * 255,
                          Path("<array>"))
        if values.ndim == 3:
            values = values.max(axis=2)
    values = fit_mask_size(values, working_size, image_size, options.resize, name)
    binary = binarise(values, options.threshold, options.invert)
    if not binary.any():
        raise empty_mask_error(name, options.threshold, options.invert)
    binary = dilate(binary, options.dilate)
    if binary.all():
        raise full_mask_error(name)
    width = latent_factor if options.feather is None else int(options.feather)
    soft = feather(binary, width)
    latent_width, latent_height = working_size[0] // latent_factor, working_size[1] // latent_factor
    return PreparedMask(binary, soft, latent_mask(soft, binary, (latent_width, latent_height)), width)


def empty_mask_error(name: str, threshold: float, invert: bool = False) -> MaskError:
    """The error for a mask that selects nothing (with ``invert``, black selects: the hint says so)."""
    if invert:
        return MaskError(f"{name} is empty once inverted (no pixel below threshold {threshold}): nothing to "
                         "inpaint; with --invert-mask paint the region to regenerate black, raise --mask-threshold, "
                         "or drop --invert-mask")
    return MaskError(f"{name} is empty (no pixel at or above threshold {threshold}): nothing to inpaint; "
                     "paint the region to regenerate white, or lower --mask-threshold")


def full_mask_error(name: str) -> MaskError:
    return MaskError(f"{name} covers the whole image: that is plain generation, not inpainting; "
                     "leave some of the image unmasked (or sample the prompt from noise)")


def check_mask_file(path: str | Path, options: MaskOptions = MaskOptions()) -> None:
    """Read a mask file at its own size and refuse an empty or full one, before any model work.

    Raises:
        MaskError: missing, unreadable, empty or full mask (the size is checked by :func:`prepare_mask`).
    """
    name = f"mask {Path(path).name}"
    binary = binarise(read_mask(path), options.threshold, options.invert)
    if not binary.any():
        raise empty_mask_error(name, options.threshold, options.invert)
    if binary.all():
        raise full_mask_error(name)


def paste(generated: np.ndarray, source: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """uint8 ``generated·soft + source·(1 − soft)``; pixels with soft = 0 are ``source`` exactly."""
    if generated.shape != source.shape:
        raise ImageError(f"cannot paste: generated image {generated.shape} and source {source.shape} differ in size")
    alpha = soft.astype(np.float64)[..., None]
    mixed = generated.astype(np.float64) * alpha + source.astype(np.float64) * (1.0 - alpha)
    out = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    keep = soft <= 0
    out[keep] = source[keep]
    return out

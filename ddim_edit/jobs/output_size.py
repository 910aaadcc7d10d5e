"""Outputs at the source's resolution: the model works at its size, the result is sized back.

The model sees the image fitted to its native size (aspect kept, sides a multiple of the VAE and
UNet factor); the decoded result is resized to the source's own (width, height). Where an edit
keeps pixels of the source (inpainting, blended swaps), those pixels are the original
full-resolution ones: the soft mask is brought to the full size and the paste keeps every pixel
whose weight is 0 bit-exact.
"""

from __future__ import annotations

import numpy as np

from ..edits.local_blend import blended_pixels
from ..images import resize_rgb, resize_soft_mask
from ..masks import paste


def output_size(working: tuple[int, int], original: tuple[int, int] | None, keep_working_size: bool) -> tuple[int, int]:
    """(width, height) of the output: the source's, unless asked for the working size or unknown."""
    return working if keep_working_size or original is None else (int(original[0]), int(original[1]))


def size_of(image: np.ndarray) -> tuple[int, int]:
    """(width, height) of uint8 [H, W, 3] pixels."""
    return int(image.shape[1]), int(image.shape[0])


def to_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to (width, height) (Lanczos); unchanged when already that size."""
    return resize_rgb(image, tuple(size))


def paste_at_size(generated: np.ndarray, original: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Inpainting's paste at the original's size: the generated pixels and the working-size soft mask
    are resized to it; pixels of weight 0 are the original's exactly."""
    size = size_of(original)
    return paste(to_size(generated, size), original, resize_soft_mask(soft, size))


def blend_at_size(edited: np.ndarray, original: np.ndarray, blend_mask, dilate: int, feather: int,
                  change: tuple[float, float] | None) -> np.ndarray:
    """A swap's local blend at the original's size: the latent mask made into a pixel mask there."""
    return blended_pixels(to_size(edited, size_of(original)), original, blend_mask, dilate, feather, change)

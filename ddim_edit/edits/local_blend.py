"""Local blend: where an edit may change the image, from the cross-attention maps of chosen words.

prompt-to-prompt's ``LocalBlend`` (Hertz et al.) keeps the source branch's latents outside a mask
made from the blend words' cross-attention maps. Its rule, which :func:`blend_mask` follows step by
step, with the maps **accumulated over the steps sampled so far**:

1. ``M``: per branch, the words' maps summed over the words and averaged over the voting layers
   (prompt-to-prompt: the 16 × 16 cross-attention layers of SD's 64 × 64 latent), [h_m, w_m];
2. a max-pool of radius ``k`` (prompt-to-prompt: k = 1, a 3 × 3 window);
3. nearest-neighbour upsampling to the latent's size;
4. normalisation: by the maximum (prompt-to-prompt) or min–max;
5. ``M > threshold`` (prompt-to-prompt: 0.3); the mask is the union over the two branches.

The blend in latent space keeps the source's latents outside the mask, but the VAE decoder sees the
whole latent (its mid block attends globally), so an edited region can still tint the decoded
background. :func:`composite` therefore also pastes the source pixels back outside a feathered,
upsampled copy of the mask, so a blend can only keep more of the source, never less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PromptError
from ..options import pair

NORMALISATIONS = ("max", "minmax")


@dataclass(frozen=True)
class BlendRule:
    """How accumulated word maps become a mask (prompt-to-prompt's rule: ``BlendRule(0.3, "max", 1)``).

    Attributes:
        threshold: keep latent pixels whose normalised map is above this.
        normalise: ``max`` (divide by the maximum) or ``minmax`` (map the range to [0, 1]).
        pool_radius: max-pool radius k (window 2k + 1) at the maps' resolution.
    """

    threshold: float = 0.3
    normalise: str = "max"
    pool_radius: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and 0 <= self.threshold <= 1):
            raise PromptError(f"the blend threshold must be a fraction in [0, 1], got {self.threshold}")
        if self.normalise not in NORMALISATIONS:
            raise PromptError(f"unknown blend normalisation {self.normalise!r}; choose one of {', '.join(NORMALISATIONS)}")
        if not isinstance(self.pool_radius, int) or self.pool_radius < 0:
            raise PromptError(f"the blend pool radius must be a whole number ≥ 0, got {self.pool_radius}")


def layer_grid(queries: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of an attention layer with ``queries`` positions over a latent of size ``latent_hw``."""
    height, width = latent_hw
    factor = max(1, round(math.sqrt(height * width / queries)))
    grid = (math.ceil(height / factor), math.ceil(width / factor))
    if grid[0] * grid[1] != queries:
        raise ValueError(f"cannot place {queries} attention positions on a {height}×{width} latent")
    return grid


def voting_side(sides: list[int], latent_side: int) -> int:
    """The layer side whose maps make the mask: the coarsest one that is at least a quarter of the latent.

    prompt-to-prompt uses the 16 × 16 layers of SD's 64 × 64 latent; at other sizes the same
    fraction is taken, or the nearest finer resolution that the UNet has.
    """
    if not sides:
        raise ValueError("the UNet has no cross-attention layers to take blend maps from")
    wanted = latent_side / 4
    candidates = [side for side in sides if side >= wanted]
    return min(candidates) if candidates else max(sides)


def blend_mask(maps: dict[str, torch.Tensor], latent_hw: tuple[int, int], rule: BlendRule) -> torch.Tensor:
    """prompt-to-prompt's LocalBlend mask from accumulated maps (per branch [h_m, w_m]): bool [h, w]."""
    union = torch.zeros(latent_hw, dtype=torch.bool)
    for word_map in maps.values():
        image = word_map[None, None].float()
        k = rule.pool_radius
        if k > 0:
            image = F.max_pool2d(image, 2 * k + 1, stride=1, padding=k)
        image = F.interpolate(image, size=latent_hw, mode="nearest")[0, 0]
        if rule.normalise == "minmax":
            image = image - image.min()
        image = image / image.max().clamp_min(1e-12)
        union |= (image > rule.threshold).cpu()
    return union


def soft_pixel_mask(mask: torch.Tensor | np.ndarray, size: tuple[int, int], dilate: int = 2,
                    feather: int = 2) -> np.ndarray:
    """The latent mask at pixel size ``size`` (width, height), dilated and feathered: float32 [H, W] in [0, 1].

    Args:
        mask: bool [h, w] (latent resolution).
        dilate: grow the mask by this many pixels per latent pixel of the VAE factor, i.e. ``dilate``
            × (pixels per latent pixel), so a region the latent blend edited is always covered.
        feather: Gaussian feather width, in the same units.
    """
    import cv2

    mask = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, dtype=np.uint8)
    width, height = size
    factor = max(1, round(width / mask.shape[1]))
    pixels = cv2.resize(mask * 255, (width, height), interpolation=cv2.INTER_NEAREST)
    radius = int(dilate * factor)
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        pixels = cv2.dilate(pixels, kernel)
    soft = pixels.astype(np.float32) / 255.0
    sigma = feather * factor / 2
    if sigma > 0:
        soft = np.maximum(cv2.GaussianBlur(soft, (0, 0), sigmaX=sigma), soft)  # feather outwards only
    return np.clip(soft, 0.0, 1.0)


def check_change_ramp(change: tuple[float, float]) -> None:
    """Raise :class:`PromptError` (field ``blend_change``) unless ``change`` is (LOW, HIGH) with 0 ≤ LOW < HIGH."""
    try:
        low, high = (float(value) for value in change)
    except (TypeError, ValueError):
        raise PromptError(f"{{field}} must be two numbers LOW,HIGH, got {change!r}; e.g. {{field}} 20,60",
                          field="blend_change", value=change) from None
    if not (math.isfinite(high) and 0 <= low < high):
        raise PromptError(f"{{field}} needs 0 ≤ LOW < HIGH, got {low:g},{high:g}; e.g. {{field}} 20,60",
                          field="blend_change", value=change)


def parse_change_ramp(value: Any, key: str = "blend_change", example: str = "20,60") -> tuple[float, float]:
    """``blend_change`` from the CLI (``"20,60"``) or a manifest (``[20, 60]``): checked (LOW, HIGH)."""
    ramp = pair(value, key, example, what="LOW,HIGH or off")
    check_change_ramp(ramp)
    return ramp


def change_weight(edited: np.ndarray, source: np.ndarray, low: float, high: float) -> np.ndarray:
    """How much of the edit to keep per pixel, from how far it moved from the source: float32 [H, W].

    0 where the RGB distance (Euclidean, 0–255 units) is at most ``low``, 1 from ``high`` on, linear
    between: pixels the edit left about as they were keep the source's values exactly.
    """
    check_change_ramp((low, high))
    if edited.shape != source.shape:
        raise ValueError(f"the edit {edited.shape} and the source {source.shape} differ in size")
    distance = np.linalg.norm(edited.astype(np.float32) - source.astype(np.float32), axis=-1)
    return np.clip((distance - low) / (high - low), 0.0, 1.0).astype(np.float32)


def blended_pixels(edited: np.ndarray, source: np.ndarray, mask: torch.Tensor | np.ndarray, dilate: int,
                   feather: int, change: tuple[float, float] | None) -> np.ndarray:
    """The local blend in pixels: the edit inside the feathered mask where it changed the source, else the source."""
    height, width = edited.shape[:2]
    weight = soft_pixel_mask(mask, (width, height), dilate, feather)
    if change is not None:
        weight = weight * change_weight(edited, source, *change)
    return composite(edited, source, weight)


def composite(edited: np.ndarray, source: np.ndarray, soft_mask: np.ndarray) -> np.ndarray:
    """``source · (1 − m) + edited · m`` for uint8 RGB images and a [H, W] mask in [0, 1]."""
    if edited.shape != source.shape:
        raise ValueError(f"the edit {edited.shape} and the source {source.shape} differ in size")
    weight = soft_mask[..., None].astype(np.float32)
    mixed = source.astype(np.float32) * (1 - weight) + edited.astype(np.float32) * weight
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

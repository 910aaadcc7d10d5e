"""Read a toy-world scene back from pixels, so generated and edited images can be scored without a
learned classifier.

Steps (all on a uint8 RGB image of any square size):

1. background: the median of the border pixels, named by the nearest entry of ``BACKGROUNDS``;
2. region: pixels far from that background colour, cleaned by a morphological opening, the largest
   connected component kept;
3. silhouette (``ReadResult.mask``): the region's outer contour, filled;
4. colour: the median of the region's most saturated half (away from anti-aliased edges), named by
   the nearest entry of ``COLORS``;
5. fill: the fraction of the silhouette's interior (pixels farther than the outline width from its
   edge) nearer the shape's colour than the background's: solid ~1, striped ~1/2, outlined ~0;
6. shape: the silhouette's bounding box fixes centre and scale for each candidate shape; the shape
   whose drawn silhouette overlaps it best (intersection over union) wins. Contour descriptors
   (polygon vertex count, solidity, circularity) are reported alongside for diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from .world import (
    BACKGROUNDS,
    BASE_SIZE,
    COLORS,
    OUTLINE_WIDTH,
    SHAPES,
    Scene,
    shape_extent,
    shape_mask,
)

__all__ = ["ReadResult", "read_scene", "attribute_accuracy", "ATTRIBUTES"]

ATTRIBUTES = ("shape", "color", "fill", "background")

_BACKGROUND_NAMES = tuple(BACKGROUNDS)
_BACKGROUND_RGB = np.array([BACKGROUNDS[n] for n in _BACKGROUND_NAMES], dtype=np.float64)
_COLOR_NAMES = tuple(COLORS)
_COLOR_RGB = np.array([COLORS[n] for n in _COLOR_NAMES], dtype=np.float64)

# A pixel belongs to the shape when it is farther than this from the background colour (RGB
# Euclidean distance, 0-255). Shape and background colours are >= ~115 apart, so this is about half.
_REGION_THRESHOLD = 55.0
_SOLID_MIN_COVERAGE = 0.75
_OUTLINED_MAX_COVERAGE = 0.22


@dataclass
class ReadResult:
    """Attributes read from an image. Names are ``None`` when no shape was found."""

    background: str
    color: str | None
    fill: str | None
    shape: str | None
    mask: np.ndarray  # filled silhouette, bool (H, W)
    region: np.ndarray  # pixels of the shape's colour, bool (H, W)
    cx: float | None = None  # geometry in 64-px units (as in Scene)
    cy: float | None = None
    size: float | None = None
    interior_coverage: float | None = None
    shape_scores: dict[str, float] = field(default_factory=dict)  # IoU per candidate shape
    descriptors: dict[str, float] = field(default_factory=dict)

    def attributes(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in ATTRIBUTES}


def _nearest(rgb: np.ndarray, names: tuple[str, ...], table: np.ndarray) -> str:
    return names[int(np.argmin(np.linalg.norm(table - rgb[None, :], axis=1)))]


def _as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.max(initial=0.0) <= 1.0 + 1e-6:
            image = image * 255.0
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image


def _fit_shape(silhouette: np.ndarray, scale: float) -> tuple[str, dict[str, float], tuple]:
    """Best matching shape by IoU of drawn silhouettes fitted to the mask's bounding box."""
    ys, xs = np.nonzero(silhouette)
    # Bounding box edges in pixels (pixel i spans [i, i + 1)), then in 64-px units.
    x0, x1 = xs.min() / scale, (xs.max() + 1) / scale
    y0, y1 = ys.min() / scale, (ys.max() + 1) / scale
    image_size = silhouette.shape[0]
    scores: dict[str, float] = {}
    geometry: dict[str, tuple[float, float, float]] = {}
    for shape in SHAPES:
        u0, u1, v0, v1 = shape_extent(shape)
        radius = 0.5 * ((x1 - x0) / (u1 - u0) + (y1 - y0) / (v1 - v0))
        cx = 0.5 * (x0 + x1) - radius * 0.5 * (u0 + u1)
        cy = 0.5 * (y0 + y1) - radius * 0.5 * (v0 + v1)
        candidate = Scene(shape, _COLOR_NAMES[0], "solid", _BACKGROUND_NAMES[0], cx, cy, 2 * radius)
        drawn = shape_mask(candidate, image_size, exact=False)
        union = np.logical_or(drawn, silhouette).sum()
        scores[shape] = float(np.logical_and(drawn, silhouette).sum() / max(union, 1))
        geometry[shape] = (cx, cy, 2 * radius)
    best = max(scores, key=scores.get)
    return best, scores, geometry[best]


def _descriptors(silhouette: np.ndarray) -> dict[str, float]:
    contours, _ = cv2.findContours(
        silhouette.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    contour = max(contours, key=cv2.contourArea)
    area = float(cv2.contourArea(contour))
    perimeter = float(cv2.arcLength(contour, True))
    hull_area = float(cv2.contourArea(cv2.convexHull(contour)))
    approx = cv2.approxPolyDP(contour, 0.04 * perimeter, True)
    return {
        "area": area,
        "vertices": float(len(approx)),
        "circularity": 4 * np.pi * area / max(perimeter**2, 1e-9),
        "solidity": area / max(hull_area, 1e-9),
    }


def read_scene(image: np.ndarray) -> ReadResult:
    """Recover a scene's attributes from an RGB image.

    Args:
        image: ``(H, W, 3)`` RGB, ``uint8`` or float in ``[0, 1]``; square, any size (64 is native).

    Returns:
        A ``ReadResult``; ``shape``, ``color`` and ``fill`` are ``None`` when no shape region is
        found.
    """
    image = _as_uint8_rgb(image)
    height, width = image.shape[:2]
    scale = width / BASE_SIZE
    pixels = image.astype(np.float64)

    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]], axis=0)
    background_rgb = np.median(border, axis=0)
    background = _nearest(background_rgb, _BACKGROUND_NAMES, _BACKGROUND_RGB)

    distance = np.linalg.norm(pixels - background_rgb[None, None, :], axis=2)
    raw = (distance > _REGION_THRESHOLD).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    cleaned = cv2.morphologyEx(raw, cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(cleaned, connectivity=8)
    empty = np.zeros((height, width), dtype=bool)
    if count <= 1:
        return ReadResult(background, None, None, None, empty, empty)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    component = (labels == largest).astype(np.uint8)
    if component.sum() < 4:
        return ReadResult(background, None, None, None, empty, empty)

    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    silhouette_u8 = np.zeros_like(component)
    cv2.drawContours(silhouette_u8, contours, -1, 1, thickness=cv2.FILLED)
    silhouette = silhouette_u8.astype(bool)
    # The region: shape-coloured pixels (before opening, so thin stripes survive) inside the shape.
    region = raw.astype(bool) & silhouette

    region_distance = distance[region]
    core = region & (distance >= np.median(region_distance))
    color_rgb = np.median(pixels[core], axis=0)
    color = _nearest(color_rgb, _COLOR_NAMES, _COLOR_RGB)

    inside_distance = cv2.distanceTransform(silhouette_u8, cv2.DIST_L2, 5)
    interior = inside_distance > (OUTLINE_WIDTH + 1.5) * scale
    if interior.sum() < 3:
        interior = inside_distance > (OUTLINE_WIDTH * scale)
    if interior.sum() == 0:
        interior = silhouette
    # Interior pixels closer to the shape's colour than to the background's (robust to blur).
    nearer_color = np.linalg.norm(pixels - color_rgb[None, None, :], axis=2) < distance
    coverage = float(nearer_color[interior].mean())
    if coverage >= _SOLID_MIN_COVERAGE:
        fill = "solid"
    elif coverage <= _OUTLINED_MAX_COVERAGE:
        fill = "outlined"
    else:
        fill = "striped"

    shape, scores, (cx, cy, size) = _fit_shape(silhouette, scale)
    return ReadResult(
        background=background,
        color=color,
        fill=fill,
        shape=shape,
        mask=silhouette,
        region=region,
        cx=cx,
        cy=cy,
        size=size,
        interior_coverage=coverage,
        shape_scores=scores,
        descriptors=_descriptors(silhouette),
    )


def attribute_accuracy(
    images: Sequence[np.ndarray], scenes: Sequence[Scene]
) -> dict[str, float]:
    """Fraction of images whose read attribute equals the scene's, per attribute, plus ``"all"``
    (every attribute right)."""
    if len(images) != len(scenes):
        raise ValueError(f"got {len(images)} images for {len(scenes)} scenes")
    if not scenes:
        raise ValueError("need at least one image")
    correct = {name: 0 for name in ATTRIBUTES}
    all_correct = 0
    for image, scene in zip(images, scenes):
        result = read_scene(image)
        hits = [getattr(result, name) == getattr(scene, name) for name in ATTRIBUTES]
        for name, hit in zip(ATTRIBUTES, hits):
            correct[name] += int(hit)
        all_correct += int(all(hits))
    n = len(scenes)
    accuracy = {name: correct[name] / n for name in ATTRIBUTES}
    accuracy["all"] = all_correct / n
    return accuracy

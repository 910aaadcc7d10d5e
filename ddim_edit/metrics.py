"""Image quality metrics on uint8 RGB arrays or float arrays in [0, 1]."""

from __future__ import annotations

import math

import numpy as np


def _float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB (peak 1.0); over ``mask`` pixels (H×W bool) when given."""
    diff = (_float(a) - _float(b)) ** 2
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return float("nan")
        diff = diff[mask]
    mse = float(diff.mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004), Gaussian window σ = 1.5, averaged over channels."""
    import cv2

    x, y = _float(a), _float(b)
    c1, c2 = 0.01**2, 0.03**2
    blur = lambda img: cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(value.mean())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def centroid_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Distance in pixels between the centroids of two boolean masks (NaN when either is empty).

    Tells a displaced silhouette (large shift, low IoU) from a misshapen one (small shift, low IoU).
    """
    points = []
    for mask in (a, b):
        rows, cols = np.nonzero(np.asarray(mask, bool))
        if rows.size == 0:
            return float("nan")
        points.append(np.array([rows.mean(), cols.mean()]))
    return float(np.linalg.norm(points[0] - points[1]))

"""Images from the page kept as content-addressed PNG files.

The job layer records an image file's path and SHA-256 in the trajectory it inverts, which is what
lets an edit of a cached trajectory come back at the source's full resolution (and report PSNR
against it). So every uploaded image is written once, losslessly, under the hash of its pixels.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ImageError


def pixels_hash(pixels: np.ndarray) -> str:
    """SHA-256 of the pixels and their shape (the same picture from two uploads hashes the same)."""
    digest = hashlib.sha256(repr((pixels.shape, str(pixels.dtype))).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def as_rgb(pixels: np.ndarray | None, what: str = "image") -> np.ndarray:
    """uint8 RGB [H, W, 3] from what an image component gives (grey, RGBA composited on white)."""
    if pixels is None:
        raise ImageError(f"no {what} was given; upload one (PNG, JPEG or WebP)")
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        if np.issubdtype(pixels.dtype, np.floating) and pixels.size and float(pixels.max()) <= 1.0:
            pixels = pixels * 255.0
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or min(pixels.shape[:2]) < 1:
        raise ImageError(f"the {what} must be an RGB picture, got an array of shape {list(pixels.shape)}")
    if pixels.shape[2] == 4:
        alpha = pixels[..., 3:].astype(np.float32) / 255.0
        pixels = (pixels[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(pixels)


class UploadStore:
    """Writes each distinct picture once as ``<folder>/<sha256>.png`` and returns its path.

    ``max_bytes``: the largest PNG kept (None: no limit); a larger picture is refused, nothing written.
    """

    def __init__(self, folder: str | Path, max_bytes: int | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    def keep(self, pixels: np.ndarray, what: str = "image") -> tuple[Path, str]:
        """(path of the PNG, hash of the pixels) for an uploaded picture."""
        pixels = as_rgb(pixels, what)
        key = pixels_hash(pixels)
        path = self.folder / f"{key}.png"
        if not path.is_file():
            encoded = io.BytesIO()
            Image.fromarray(pixels, "RGB").save(encoded, format="PNG")
            if self.max_bytes is not None and encoded.tell() > self.max_bytes:
                raise ImageError(f"the {what} is {encoded.tell() / 2**20:.1f} MB as PNG, over this server's upload "
                                 f"limit of {self.max_bytes / 2**20:g} MB; upload a smaller picture")
            partial = path.with_suffix(".partial")
            partial.write_bytes(encoded.getvalue())
            partial.replace(path)
        return path, key

"""Reading images and masks, fitting sizes to the model, saving PNGs with their parameters.

Images are read with Pillow (EXIF orientation applied; RGBA composited on white; grayscale,
palette and 16-bit images converted to 8-bit RGB) and handled as float tensors in [0, 1],
[1, 3, H, W]. Masks are read with OpenCV (any image file; white = edit).
"""

from __future__ import annotations

import io
import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import ImageError
from .io import IMAGE_FORMATS, atomic_write, check_output_suffix

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression bombs)
MAX_SIDE = 4096  # largest working size (longer side, pixels): beyond it the pixels alone take gigabytes


@contextmanager
def _no_pillow_bomb_check():
    """Let Pillow open any header: :func:`image_size_error` refuses large images with a clear message."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def image_size_error(what: str, width: int, height: int, limit: int = MAX_PIXELS) -> str | None:
    """The message for an image over ``limit`` pixels (None when it fits), saying how to fix it."""
    if width * height <= limit:
        return None
    return (f"{what} is {width}x{height} ({width * height / 1e6:.0f} megapixels), over the "
            f"{limit // 1_000_000}-megapixel limit; resize it (e.g. to 2048 pixels on the longer side) and try again")


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from an image file's header without decoding it; None if Pillow cannot read it."""
    try:
        with _no_pillow_bomb_check(), Image.open(path) as handle:
            return handle.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB [H, W, 3], applying EXIF orientation.

    Raises:
        ImageError: missing, unreadable, zero-size or oversized files, with a hint.
    """
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"image {path} is a folder; give an image file (PNG, JPEG or WebP)")
    if not path.is_file():
        raise ImageError(f"image {path} does not exist; check the path")
    try:
        with _no_pillow_bomb_check(), Image.open(path) as handle:
            width, height = handle.size
            if width == 0 or height == 0:
                raise ImageError(f"image {path} has zero size")
            too_large = image_size_error(f"image {path}", width, height)
            if too_large:
                raise ImageError(too_large)
            image = ImageOps.exif_transpose(handle)
            image.load()
    except ImageError:
        raise
    except MemoryError as exc:
        raise ImageError(f"image {path} does not fit in memory; resize it and try again") from exc
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot read {path} as an image (corrupt or unsupported format); use PNG, JPEG or WebP") from exc
    return to_rgb8(image)


def to_rgb8(image: Image.Image) -> np.ndarray:
    """Any Pillow mode → uint8 RGB; alpha is composited over white, 16-bit scaled down."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        gray = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        gray = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def fit_size(width: int, height: int, target: int, multiple: int) -> tuple[int, int]:
    """Scale so the longer side is ``target``, then round each side to a multiple (≥ multiple).

    Raises:
        ImageError: ``target`` is over :data:`MAX_SIDE` (the pixels alone would take gigabytes).
    """
    if target > MAX_SIDE:
        raise ImageError(f"a working size of {target} pixels is over the limit of {MAX_SIDE}; "
                         f"choose a size of at most {MAX_SIDE} (the model's native size is usually best)")
    scale = target / max(width, height)
    fitted = [max(multiple, int(round(side * scale / multiple)) * multiple) for side in (width, height)]
    return fitted[0], fitted[1]


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB to (width, height) with Lanczos (area when shrinking a lot)."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] → float32 [1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image).copy()).permute(2, 0, 1)[None].float() / 255.0


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """Float [1, 3, H, W] or [3, H, W] in [0, 1] → uint8 [H, W, 3] (rounded)."""
    if pixels.ndim == 4:
        pixels = pixels[0]
    return (pixels.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def png_bytes(image: np.ndarray, parameters: dict[str, Any] | None = None) -> bytes:
    """Encode uint8 RGB as PNG with ``parameters`` embedded as a JSON text chunk."""
    return image_bytes(image, parameters, "PNG")


def a1111_parameters(parameters: dict[str, Any]) -> str:
    """The AUTOMATIC1111-style ``parameters`` text of an output (what image viewers and web UIs show).

    Line 1 is the prompt (the target prompt of an edit), line 2 ``Negative prompt: …`` when there is
    one, then ``Key: value`` pairs: ``Steps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 0, Size: 451x300,
    Model hash: …, Model: …, Version: ddim-edit 0.1.0, Edit: swap, …``.
    """
    prompt = parameters.get("target") or parameters.get("prompt") or parameters.get("source") or ""
    lines = [str(prompt)]
    if parameters.get("negative_prompt"):
        lines.append(f"Negative prompt: {parameters['negative_prompt']}")
    pairs = [("Steps", parameters.get("steps")), ("Sampler", parameters.get("sampler", "DDIM")), ("CFG scale", parameters.get("guidance")),
             ("Seed", parameters.get("seed")), ("Size", _size_text(parameters.get("size"))),
             ("Model hash", parameters.get("model_hash")), ("Model", parameters.get("model")),
             ("Version", f"ddim-edit {parameters['version']}" if parameters.get("version") else None),
             ("Edit", parameters.get("command")), ("Inversion", parameters.get("method")),
             ("Source prompt", parameters.get("source") if parameters.get("target") else None)]
    lines.append(", ".join(f"{key}: {_a1111_value(value)}" for key, value in pairs if value not in (None, "")))
    return "\n".join(lines)


def _size_text(size: Any) -> str | None:
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return f"{size[0]}x{size[1]}"
    return None


def _a1111_value(value: Any) -> str:
    """A value as A1111 writes it: quoted (JSON) when it holds a comma, colon or newline."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(text) if any(mark in text for mark in ",:\n") else text


def image_bytes(image: np.ndarray, parameters: dict[str, Any] | None = None, image_format: str = "PNG") -> bytes:
    """Encode uint8 RGB as PNG, JPEG or WEBP with ``parameters`` embedded as JSON.

    PNG keeps them in a ``ddim-edit`` text chunk (JSON) and a ``parameters`` chunk (the A1111 text of
    :func:`a1111_parameters`), JPEG the JSON in its comment; WebP gets none.
    """
    text = json.dumps(parameters, sort_keys=True, default=str) if parameters else None
    buffer = io.BytesIO()
    picture = Image.fromarray(image)
    if image_format == "PNG":
        info = PngImagePlugin.PngInfo()
        if text:
            info.add_text("ddim-edit", text)
            info.add_text("parameters", a1111_parameters(parameters))
        picture.save(buffer, format="PNG", pnginfo=info)
    elif image_format == "JPEG":
        picture.save(buffer, format="JPEG", quality=95, **({"comment": text.encode()} if text else {}))
    elif image_format == "WEBP":
        picture.save(buffer, format="WEBP", quality=95)
    else:
        raise ValueError(f"unknown image format {image_format!r}")
    return buffer.getvalue()


def save_image(path: str | Path, image: np.ndarray, parameters: dict[str, Any] | None = None,
               force: bool = False) -> Path:
    """Write an image atomically in the format its suffix names (.png, .jpg/.jpeg, .webp), refusing to
    overwrite unless ``force``.

    Raises:
        OutputError: an unknown suffix, an existing file without ``force``, or a failed write.
    """
    check_output_suffix(path, "image")
    image_format = IMAGE_FORMATS[Path(path).suffix.lower()]
    return atomic_write(path, image_bytes(image, parameters, image_format), force=force)


save_png = save_image  # the name the commands use; the format follows the suffix


def read_parameters(path: str | Path) -> dict[str, Any]:
    """The ddim-edit parameters embedded in an image written by :func:`save_image` ({} if none)."""
    with Image.open(path) as handle:
        text = handle.info.get("ddim-edit") or handle.info.get("comment")
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


GRID_MIN_HEIGHT = 192  # small images are enlarged (whole pixels) so that a grid and its labels can be read


def grid(images: list[np.ndarray], labels: list[str] | None = None, pad: int = 4) -> np.ndarray:
    """Side-by-side comparison grid: every image at the first one's height, enlarged by a whole
    factor (nearest neighbour) when that height is under ``GRID_MIN_HEIGHT``."""
    import cv2

    height = images[0].shape[0] * max(1, -(-GRID_MIN_HEIGHT // images[0].shape[0]))
    tiles = []
    for index, image in enumerate(images):
        if image.shape[0] != height:
            width = max(1, round(image.shape[1] * height / image.shape[0]))
            enlarged = height % image.shape[0] == 0
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST if enlarged else cv2.INTER_AREA)
        tile = image
        if labels:
            bar = np.full((max(12, height // 8), image.shape[1], 3), 255, np.uint8)
            text = labels[index]
            width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)[0][0]
            scale = min(bar.shape[0] / 30.0, (image.shape[1] - 4) / max(width, 1))  # fit the tile's width
            cv2.putText(bar, text, (2, bar.shape[0] - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
            tile = np.concatenate([bar, image], axis=0)
        tiles.append(tile)
        tiles.append(np.full((tile.shape[0], pad, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def resize_soft_mask(soft: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float [H, W] mask in [0, 1] at (width, height), bilinear; zeros far from the mask stay exactly 0."""
    import cv2

    if (soft.shape[1], soft.shape[0]) == tuple(size):
        return soft.astype(np.float32)
    resized = cv2.resize(soft.astype(np.float32), tuple(size), interpolation=cv2.INTER_LINEAR)
    return np.clip(resized, 0.0, 1.0)

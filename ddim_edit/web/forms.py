"""The page's free-text fields and painted masks → the library's options.

A field that cannot be read raises the library's own error (:class:`~ddim_edit.errors.PromptError`,
:class:`~ddim_edit.masks.MaskError`), which the page shows as one line like the CLI.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..edits.prompt_swap import parse_word_values
from ..errors import DdimEditError, PromptError
from ..masks import MaskError
from ..options import words as split_words

def words(text: str | None) -> tuple[str, ...]:
    """``"red, circle"`` or ``"red circle"`` → ``("red", "circle")``."""
    return split_words(text or "")


def word_values(text: str | None, what: str, example: str) -> dict[str, float]:
    """``"blue=2, red=0.5"`` → ``{"blue": 2.0, "red": 0.5}``; a bad item names ``what`` and an example."""
    return parse_word_values(words(text), what, example)


def blend_choice(local_blend: bool, blend_words: str | None) -> tuple[str, ...] | None:
    """Swap's ``blend_words``: None (the words that differ), the given words, or () with blend off."""
    if not local_blend:
        return ()
    return words(blend_words) or None


def optional_text(text: str | None) -> str | None:
    """A text box's value, None when left empty."""
    text = (text or "").strip()
    return text or None


def declared(options: type, **values: Any) -> Any:
    """An options dataclass from the page's fields by key (blank ones: the defaults), each converted and
    range-checked as a manifest's value of that key is."""
    from ..jobs.manifest import manifest_keys
    from ..options import from_values

    converters = manifest_keys(options)
    given = {}
    for key, value in values.items():
        if value in (None, ""):
            continue
        try:
            given[key] = converters[key](value, key)
        except ValueError:
            raise DdimEditError(f"{key} must be a number, got {value!r}") from None
    return from_values(options, given, parsed=True)


def positive_int(value: Any, what: str, example: int) -> int:
    """A whole positive number from a number box (Gradio gives floats)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PromptError(f"{what} must be a positive whole number, got {value!r}; e.g. {example}") from None
    if not math.isfinite(number) or number < 1 or number != int(number):
        raise PromptError(f"{what} must be a positive whole number, got {value!r}; e.g. {example}")
    return int(number)


def painted_mask(editor_value: Any, uploaded: np.ndarray | None = None) -> np.ndarray:
    """The mask to inpaint (uint8, 255 = regenerate): the uploaded mask if any, else the painting.

    ``editor_value`` is Gradio's image editor value (``background``, ``layers``, ``composite``):
    every pixel painted on any layer (alpha > 0) is masked.
    """
    if uploaded is not None:
        mask = np.asarray(uploaded)
        if mask.ndim == 3 and mask.shape[2] == 4:  # RGBA: a transparent pixel is not masked
            mask = np.where(mask[..., 3:] > 0, mask[..., :3], 0).max(axis=2)
        elif mask.ndim == 3:
            mask = mask.max(axis=2)
        return mask.astype(np.uint8) if mask.dtype != bool else mask.astype(np.uint8) * 255
    layers = [np.asarray(layer) for layer in (editor_value or {}).get("layers") or [] if layer is not None]
    painted = [layer[..., 3] > 0 for layer in layers if layer.ndim == 3 and layer.shape[2] == 4]
    if not painted:
        raise MaskError("no mask: paint the region to regenerate on the image with the brush, or upload a mask "
                        "(white = regenerate)")
    return np.logical_or.reduce(painted).astype(np.uint8) * 255


def editor_background(editor_value: Any) -> np.ndarray | None:
    """The image under the painting (None when nothing was uploaded)."""
    if not editor_value:
        return None
    background = editor_value.get("background")
    return None if background is None else np.asarray(background)

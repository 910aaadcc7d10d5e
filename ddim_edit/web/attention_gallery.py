"""A prompt swap's per-token cross-attention heat maps as gallery tiles.

:func:`ddim_edit.edits.prompt_swap.attention_picture` draws them all in one grid (what
``ddim-edit swap --save-attention`` writes); a page shows them better one tile per token, with the
token as caption, so both come from the same :class:`~ddim_edit.edits.prompt_swap.SwapResult`.
"""

from __future__ import annotations

import numpy as np

from ..edits.prompt_swap import SwapResult, attention_picture

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def token_label(token: str) -> str:
    """A CLIP token as a reader writes it (``blue</w>`` → ``blue``)."""
    return token.replace("</w>", "")


def heat_overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The map (values in [0, 1], any size) in the JET colours, half over ``image`` (uint8 RGB)."""
    import cv2

    height, width = image.shape[:2]
    heat = cv2.resize(np.asarray(heat, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (0.5 * image + 0.5 * colour).astype(np.uint8)


def attention_tiles(result: SwapResult, images: dict[str, np.ndarray], min_side: int = 128
                    ) -> list[tuple[np.ndarray, str]]:
    """(overlay, "branch · token") per prompt token of each branch, start/end tokens left out.

    ``images`` holds the picture under each branch's maps (``source``, ``target``); tiles are
    scaled up to at least ``min_side`` pixels (nearest neighbour) so small images stay readable.
    """
    if not result.attention_maps:
        return []
    tiles = []
    for branch, maps in result.attention_maps.items():
        image = _at_least(images[branch], min_side)
        for token, heat in zip(result.tokens.get(branch, []), maps):
            if token in SPECIAL_TOKENS:
                continue
            values = heat.float().cpu().numpy() if hasattr(heat, "cpu") else np.asarray(heat)
            tiles.append((heat_overlay(image, values), f"{branch} · {token_label(token)}"))
    return tiles


def attention_sheet(result: SwapResult, images: dict[str, np.ndarray]) -> np.ndarray | None:
    """The CLI's one-picture grid of the same maps (None when none were kept)."""
    return attention_picture(result, images) if result.attention_maps else None


def _at_least(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    scale = max(1, -(-side // max(1, min(height, width))))
    if scale == 1:
        return image
    return cv2.resize(image, (width * scale, height * scale), interpolation=cv2.INTER_NEAREST)

"""The example images in ``assets/examples`` (regenerate with ``python -m ddim_edit.toy.examples``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..images import save_png
from .world import Scene, caption, render, shape_mask

EXAMPLES = {
    "red-circle.png": Scene("circle", "red", "solid", "white", cx=30.0, cy=33.0, size=40.0),
    "striped-blue-star.png": Scene("star", "blue", "striped", "beige", cx=33.0, cy=31.0, size=42.0),
    "outlined-green-square.png": Scene("square", "green", "outlined", "gray", cx=32.0, cy=32.0, size=38.0),
}


def example_mask(scene: Scene, image_size: int = 64) -> np.ndarray:
    """A mask over the right half of the shape (white = regenerate), as uint8 RGB."""
    mask = shape_mask(scene, image_size)
    mask[:, : int(scene.cx * image_size / 64)] = False
    return np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)


def write_examples(folder: Path, force: bool = False) -> list[Path]:
    """Render the examples (and a mask for the first) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, scene in EXAMPLES.items():
        written.append(save_png(folder / name, render(scene), {"caption": caption(scene)}, force=force))
    first = next(iter(EXAMPLES.values()))
    written.append(save_png(folder / "red-circle-mask.png", example_mask(first), force=force))
    return written


if __name__ == "__main__":
    for path in write_examples(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("assets/examples"), force=True):
        print(path)

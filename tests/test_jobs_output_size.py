"""Outputs at the source's resolution (ddim_edit/jobs/output_size.py) from the single commands."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.batch_helpers import photos  # noqa: F401 (pytest fixtures)
from tests.cli_helpers import run, SOURCE, TARGET


def test_single_commands_write_the_source_resolution_and_parameters(photos, tmp_path):
    from ddim_edit.images import load_image, read_parameters

    photo, mask = photos / "photo.png", photos / "mask.png"
    out = tmp_path / "inpaint.png"
    result = run("inpaint", photo, "--mask", mask, "--source-prompt", SOURCE, "--steps", "4", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    original, painted = load_image(photo), load_image(out)
    assert painted.shape == original.shape == (300, 451, 3)
    far = np.asarray(Image.open(mask).convert("L")) == 0
    far &= ~_grown(~far, 48)  # outside the mask and its feather (4 working px ≈ 28 px here): the original's pixels
    assert far.sum() > 30_000 and (painted[far] == original[far]).all()
    assert not (painted == original).all()

    with Image.open(out) as image:
        text = image.info["parameters"]
    assert text.splitlines()[0] == SOURCE and "Steps: 4" in text and "Model hash: " in text and "Seed: 0" in text
    assert "Size: 451x300" in text and "Version: ddim-edit" in text
    parameters = read_parameters(out)
    assert parameters["command"] == "inpaint" and parameters["model"] == "toy" and parameters["model_hash"]

    small = tmp_path / "small.png"
    result = run("swap", photo, "-s", SOURCE, "-t", TARGET, "--steps", "4", "-o", small, "-q", "--keep-working-size")
    assert result.exit_code == 0, result.output
    assert Image.open(small).size == (64, 48)


def _grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    import cv2

    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)

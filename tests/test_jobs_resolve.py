"""Inputs resolved for a job (ddim_edit/jobs/resolve.py): a folder given as a file is called a folder."""

from __future__ import annotations

import pytest

from tests.cli_helpers import SOURCE, TARGET
from tests.output_helpers import FAST, refused
from tests.output_helpers import mask, photo  # noqa: F401 (pytest fixtures)


# ---------------------------------------------------------------------- 7. messages that said the wrong thing
@pytest.mark.parametrize("case", ["invert_image", "swap_image", "style_content", "inpaint_image", "inpaint_mask"])
def test_a_folder_given_as_an_input_file_is_called_a_folder(tmp_path, photo, mask, case):
    folder = tmp_path / "pictures.png"
    folder.mkdir()
    args = {
        "invert_image": ("invert", folder, "-p", SOURCE, "-o", tmp_path / "t.traj.safetensors", *FAST),
        "swap_image": ("swap", folder, "-s", SOURCE, "-t", TARGET, "-o", tmp_path / "o.png", *FAST),
        "style_content": ("style", "--content", folder, "--style", photo, "-o", tmp_path / "o.png", *FAST),
        "inpaint_image": ("inpaint", folder, "--mask", mask, "--source-prompt", SOURCE, "-o", tmp_path / "o.png", *FAST),
        "inpaint_mask": ("inpaint", photo, "--mask", folder, "--source-prompt", SOURCE, "-o", tmp_path / "o.png", *FAST),
    }[case]
    line = refused(tmp_path, args, "is a folder")
    assert "does not exist" not in line

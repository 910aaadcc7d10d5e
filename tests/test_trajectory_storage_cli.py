"""--trajectory-storage float16: a smaller file that replays as the float64 one does."""

import shutil

import numpy as np
from PIL import Image

from cli_helpers import run
from ddim_edit.model import assets_dir
from ddim_edit.trajectory import Trajectory

SOURCE = "a solid red circle on a white background"


def test_float16_storage_from_invert_and_swap(tmp_path):
    photo = tmp_path / "photo.png"
    shutil.copy(assets_dir() / "examples" / "red-circle.png", photo)
    files = {}
    for storage in ("float64", "float16"):
        files[storage] = tmp_path / f"{storage}.traj.safetensors"
        result = run("invert", photo, "-p", SOURCE, "--steps", 10, "--trajectory-storage", storage, "-o", files[storage], "-q")
        assert result.exit_code == 0, result.output
    assert Trajectory.load(files["float16"]).metadata.get("storage") == "float16"
    assert files["float16"].stat().st_size < 0.6 * files["float64"].stat().st_size
    pictures = {}
    for storage, path in files.items():
        out = tmp_path / f"{storage}.png"
        assert run("reconstruct", path, "-o", out, "-q").exit_code == 0
        pictures[storage] = np.asarray(Image.open(out)).astype(int)
    assert np.abs(pictures["float16"] - pictures["float64"]).max() <= 2  # x_T and corrections kept: same replay
    saved = tmp_path / "swap.traj.safetensors"
    result = run("swap", photo, "-s", SOURCE, "-t", "a solid blue circle on a white background", "--steps", 6,
                 "--save-trajectory", saved, "--trajectory-storage", "float16", "-o", tmp_path / "s.png", "-q")
    assert result.exit_code == 0, result.output
    assert Trajectory.load(saved).metadata.get("storage") == "float16"

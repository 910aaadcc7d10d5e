"""The ``invert`` command (cli/invert.py) on real image files: trajectories, JSON output, bad input
→ one line, exit 1."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from ddim_edit.trajectory import Trajectory
from tests.batch_helpers import photos  # noqa: F401 (pytest fixtures)
from tests.cli_helpers import one_line_error, run, SOURCE
from tests.cli_helpers import photo  # noqa: F401 (pytest fixtures)
from tests.number_helpers import out, work  # noqa: F401 (pytest fixtures)


def test_invert_then_reconstruct(tmp_path, photo, tiny_model_dir):
    traj = tmp_path / "photo.traj.safetensors"
    result = run("invert", photo, "--prompt", "a red square on a white background", "--model", tiny_model_dir,
                 "--steps", "5", "-o", traj, "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["output"] == str(traj) and info["unet_evaluations"] == 5 + 2 * 5 and traj.exists()

    out = tmp_path / "recon.png"
    result = run("reconstruct", traj, "--model", tiny_model_dir, "-o", out, "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert out.exists() and info["psnr"] is not None  # source found through the recorded path + hash
    assert Image.open(out).size == (48, 40)  # the source's resolution (the model worked at 32x24)
    assert info["size"] == [48, 40]

    again = run("reconstruct", traj, "--model", tiny_model_dir, "-o", out, "--quiet")
    one_line_error(again, "already exists", "--force")
    forced = run("reconstruct", traj, "--model", tiny_model_dir, "-o", out, "--quiet", "--force", "--grid")
    assert forced.exit_code == 0, forced.output


@pytest.mark.parametrize("case", ["missing", "corrupt", "text", "empty_prompt", "steps0", "steps_huge", "spacing_custom_bad"])
def test_invert_bad_input(tmp_path, photo, tiny_model_dir, case):
    image, extra = photo, []
    prompt = "a cat"
    if case == "missing":
        image = tmp_path / "nope.png"
    elif case == "corrupt":
        image = tmp_path / "c.png"
        image.write_bytes(photo.read_bytes()[:60])
    elif case == "text":
        image = tmp_path / "t.png"
        image.write_text("not an image")
    elif case == "empty_prompt":
        prompt = "  "
    elif case == "steps0":
        extra = ["--steps", "0"]
    elif case == "steps_huge":
        extra = ["--steps", "5000"]
    elif case == "spacing_custom_bad":
        extra = ["--timesteps", "10,20,abc"]
    result = run("invert", image, "-p", prompt, "--model", tiny_model_dir, "-o", tmp_path / "o.traj.safetensors", *extra)
    expected = {"missing": "does not exist", "corrupt": "corrupt", "text": "corrupt", "empty_prompt": "--prompt is empty",
                "steps0": "positive integer", "steps_huge": "exceeds", "spacing_custom_bad": "comma-separated"}[case]
    one_line_error(result, expected)
    assert not (tmp_path / "o.traj.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_unknown_model_and_unwritable_output(tmp_path, photo, tiny_model_dir):
    one_line_error(run("invert", photo, "-p", "a cat", "--model", "nobody/none", "-o", tmp_path / "o.traj.safetensors"),
                   "could not load model")
    one_line_error(run("invert", photo, "-p", "a cat", "--model", tiny_model_dir, "-o", tmp_path / "no" / "o.traj.safetensors"),
                   "does not exist")


def test_quadratic_default_steps_on_the_cli(work, out):
    result = run("invert", work / "photo.png", "-p", SOURCE, "--spacing", "quadratic", "--steps", 30, "--method",
                 "ddim", "--size", 32, "-o", out / "q.traj.safetensors", "-q")
    assert result.exit_code == 0, result.output
    assert Trajectory.load(out / "q.traj.safetensors").num_steps == 30


def test_a_folder_or_many_images_point_at_batch(photos, tmp_path):
    one_line_error(run("invert", photos, "-p", SOURCE), "is a folder", "ddim-edit batch")
    one_line_error(run("invert", photos / "photo.png", photos / "star.png", "-p", SOURCE), "one image", "ddim-edit batch")

"""The ``inpaint`` command (cli/inpaint.py): masks from files, trajectories reused, one-line errors, help."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ddim_edit.images import load_image, read_parameters
from ddim_edit.model import assets_dir
from tests.cli_helpers import one_line_error, run, SOURCE
from tests.inpaint_helpers import hole, PROMPT, source_pixels


# ---------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def files(tmp_path):
    import PIL.Image

    image = tmp_path / "photo.png"
    PIL.Image.fromarray(source_pixels()).save(image)
    mask = tmp_path / "hole.png"
    cv2.imwrite(str(mask), hole().astype(np.uint8) * 255)
    return tmp_path, image, mask


def run_cli(*args):
    from cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cli_inpaints_and_reuses_a_trajectory(files, tiny_model_dir):
    folder, image, mask = files
    out = folder / "out.png"
    common = ["--model", tiny_model_dir, "--steps", 4, "-q", "--format", "json"]
    result = run_cli("inpaint", image, "--mask", mask, "--source-prompt", PROMPT, "-o", out, *common)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["prompt"] == PROMPT and payload["blend"] == "shared" and payload["paste"]
    # Plain DDIM inversion by default (4; the blend never uses exact corrections) + inpainting (2·4).
    assert payload["unet_evaluations"] == 4 + 2 * 4 and payload["method"] == "ddim"
    written = load_image(out)
    far = np.ones((32, 32), bool)
    far[0:19, 7:27] = False  # the hole grown by its 4-px feather
    np.testing.assert_array_equal(written[far], source_pixels()[far])
    assert read_parameters(out)["command"] == "inpaint"

    again = run_cli("inpaint", image, "--mask", mask, "-o", out, *common)
    assert again.exit_code == 1 and "already exists" in again.output

    traj_path = folder / "photo.traj.safetensors"
    assert run_cli("invert", image, "--prompt", PROMPT, "-o", traj_path, *common).exit_code == 0
    reused = run_cli("inpaint", image, "--mask", mask, "--trajectory", traj_path, "--prompt", "a blue square",
                     "--resample", 1, "--jump-length", 2, "--no-paste", "--hole-noise", "fresh", "--grid", "-o", folder / "new.png", *common)
    assert reused.exit_code == 0, reused.output
    payload = json.loads(reused.stdout.strip().splitlines()[-1])
    assert payload["prompt"] == "a blue square" and payload["inpaint_unet_evaluations"] == 2 * 2 * 2 * 2
    assert load_image(folder / "new.png").shape[:2] == (32, 32)  # the result alone …
    assert load_image(folder / "new.grid.png").shape[1] > 3 * 32  # … and input | mask | result beside it


def test_cli_bad_masks_give_one_line_errors(files, tiny_model_dir):
    folder, image, mask = files
    common = ["--model", tiny_model_dir, "--steps", 2, "-q", "--source-prompt", PROMPT]
    (folder / "notes.png").write_text("hello")
    cv2.imwrite(str(folder / "black.png"), np.zeros((32, 32), np.uint8))
    cv2.imwrite(str(folder / "white.png"), np.full((32, 32), 255, np.uint8))
    cv2.imwrite(str(folder / "small.png"), cv2.resize(hole().astype(np.uint8) * 255, (20, 20)))
    cases = [("missing.png", "does not exist"), ("notes.png", "cannot read mask"),
             ("black.png", "nothing to inpaint"), ("white.png", "plain generation"), ("small.png", "--resize-mask")]
    for name, message in cases:
        result = run_cli("inpaint", image, "--mask", folder / name, "-o", folder / f"{name}.out.png", *common)
        assert result.exit_code == 1, (name, result.output)
        lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(lines) == 1 and message in lines[0], (name, result.stderr)
        assert not (folder / f"{name}.out.png").exists()
    ok = run_cli("inpaint", image, "--mask", folder / "small.png", "--resize-mask", "-o", folder / "r.png", *common)
    assert ok.exit_code == 0, ok.output
    no_prompt = run_cli("inpaint", image, "--mask", mask, "-o", folder / "p.png", "--model", tiny_model_dir, "-q")
    assert no_prompt.exit_code == 1 and "--source-prompt" in no_prompt.stderr


def test_inpaint_help_shows_its_own_default_method():
    text = run("inpaint", "--help").output
    assert "[default: ddim]" in " ".join(text.split()) and "unless --method" not in text


def test_the_empty_mask_hint_follows_invert_mask(tmp_path):
    from PIL import Image

    white = tmp_path / "all-255.png"
    Image.new("L", (64, 64), 255).save(white)
    photo = assets_dir() / "examples" / "red-circle.png"
    line = run("inpaint", photo, "--mask", white, "--source-prompt", SOURCE, "--invert-mask", "-o", tmp_path / "o.png")
    one_line_error(line, "black", "--invert-mask")
    assert "paint the region to regenerate white" not in line.stderr


def test_a_trajectory_of_another_image_is_refused_naming_the_flag(files, tiny_model_dir):
    folder, image, mask = files
    other = folder / "other.png"
    pixels = load_image(image)
    cv2.imwrite(str(other), cv2.cvtColor(255 - pixels, cv2.COLOR_RGB2BGR))
    traj = folder / "other.traj.safetensors"
    assert run_cli("invert", other, "-p", PROMPT, "--model", tiny_model_dir, "--steps", 2, "-q", "-o", traj).exit_code == 0
    result = run_cli("inpaint", image, "--mask", mask, "--trajectory", traj, "-o", folder / "x.png", "-q")
    one_line_error(result, f"{traj} was made from another image than {image}", "drop --trajectory")
    assert not (folder / "x.png").exists()

"""The ``swap`` command (cli/swap.py): images then trajectories, guidance, late and mask guidance, bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddim_edit.inversion import InversionOptions, invert
from ddim_edit.workflow import make_schedule
from tests.cli_helpers import one_line_error, run, write_box_photo
from tests.swap_helpers import SOURCE, TARGET
from tests.swap_helpers import trajectories  # noqa: F401 (pytest fixtures)


RED_BOX = dict(shape=(32, 32), box=(8, 24, 8, 24))  # a 32×32 grey picture with a 16×16 red square


@pytest.fixture()
def photo(tmp_path):
    return write_box_photo(tmp_path / "red.png", **RED_BOX)


def test_cli_image_then_trajectory(tmp_path, photo, tiny_model_dir):
    out, traj, maps = tmp_path / "blue.png", tmp_path / "red.traj.safetensors", tmp_path / "maps.png"
    result = run("swap", photo, "-s", SOURCE, "-t", TARGET, "--blend", "circle", "--reweight", "blue=2",
                 "--cross-steps", "0.6", "--cross-steps", "blue=0.3", "--model", tiny_model_dir, "--steps", "4",
                 "-o", out, "--save-trajectory", traj, "--save-attention", maps, "--grid", "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["unet_evaluations"] == 3 * 4 and info["inversion_unet_evaluations"] == 4 + 2 * 4
    assert out.exists() and traj.exists() and maps.exists()
    assert Image.open(out).size == Image.open(photo).size  # the edit alone …
    assert Image.open(tmp_path / "blue.grid.png").size[0] > 3 * 32  # … and source | reconstruction | edit beside it
    assert Image.open(maps).size[1] > 2 * 32  # a row per branch

    again = run("swap", traj, "-t", "a red square on a white background", "--mode", "refine",
                "--model", tiny_model_dir, "-o", tmp_path / "square.png", "--format", "json", "-q")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["inversion_unet_evaluations"] == 0


@pytest.fixture(scope="module")
def saved_trajectory(tmp_path_factory, trajectories, tiny_model_dir):
    model, _ = trajectories
    schedule = make_schedule(model, 2)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    traj = invert(model, schedule, z0, SOURCE, InversionOptions(method="exact"), progress=False)
    traj.metadata["model"] = str(tiny_model_dir)
    return traj.save(tmp_path_factory.mktemp("traj") / "red.traj.safetensors")


@pytest.mark.parametrize("case", ["source_mismatch", "token_count", "blend_word", "reweight_word", "reweight_syntax",
                                  "exists", "missing"])
def test_cli_bad_input(tmp_path, saved_trajectory, tiny_model_dir, case):
    traj = saved_trajectory
    args, fragments = ["-t", TARGET], []
    source = traj
    if case == "source_mismatch":
        args, fragments = ["-s", "a green square", "-t", TARGET], ["differs", "trajectory"]
    elif case == "token_count":
        args, fragments = ["-t", "a blue striped circle on a white background"], ["8 words and the source 7 ('red' → 'blue striped')", "--mode refine"]
    elif case == "blend_word":
        args, fragments = ["-t", TARGET, "--blend", "dog"], ["blend word 'dog'"]
    elif case == "reweight_word":
        args, fragments = ["-t", TARGET, "--reweight", "dog=2"], ["reweight word 'dog'"]
    elif case == "reweight_syntax":
        args, fragments = ["-t", TARGET, "--reweight", "blue"], ["WORD=NUMBER"]
    elif case == "exists":
        (tmp_path / "out.png").write_bytes(b"x")
        fragments = ["already exists", "--force"]
    elif case == "missing":
        source, fragments = tmp_path / "nope.png", ["does not exist"]
    result = run("swap", source, *args, "--model", tiny_model_dir, "-o", tmp_path / "out.png", "-q")
    one_line_error(result, *fragments)


def test_cli_swap_and_inpaint_take_another_guidance_on_an_exact_trajectory(tmp_path, tiny_model_dir):
    import json

    from PIL import Image

    from tests.cli_helpers import run

    write_box_photo(tmp_path / "red.png", **RED_BOX)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(tmp_path / "hole.png")
    traj = tmp_path / "red.traj.safetensors"
    common = ["--model", tiny_model_dir, "-q", "--format", "json"]
    inverted = run("invert", tmp_path / "red.png", "--prompt", SOURCE, "--method", "exact", "--steps", "4",
                   "-o", traj, *common)
    assert inverted.exit_code == 0, inverted.output
    swapped = run("swap", traj, "-t", TARGET, "--guidance", "3", "-o", tmp_path / "blue.png", *common)
    assert swapped.exit_code == 0, swapped.output
    assert json.loads(swapped.stdout)["unet_evaluations"] == 3 * 4  # corrections made at guidance 3
    inpainted = run("inpaint", tmp_path / "red.png", "--mask", tmp_path / "hole.png", "--trajectory", traj,
                    "--guidance", "3", "-o", tmp_path / "restored.png", *common)
    assert inpainted.exit_code == 0, inpainted.output
    refused = run("reconstruct", traj, "--guidance", "3", "-o", tmp_path / "recon.png", *common)
    assert refused.exit_code == 1 and "exactly at guidance 7.5" in refused.output


@pytest.mark.parametrize("flag, value, fragment", [
    ("--blend-change", "60,20", "0 ≤ LOW < HIGH"), ("--blend-change", "20", "LOW,HIGH or off"),
    ("--blend-change", "a,b", "expects a number"),
    ("--late-guidance", "0.5", "--late-guidance must be a guidance ≥ 1"), ("--late-guidance", "x", "expects a number"),
    ("--guidance-steps", "2", "--guidance-steps must be a fraction"),
    ("--mask-guidance", "0.5", "--mask-guidance must be a guidance ≥ 1"), ("--mask-guidance", "x", "expects a number")])
def test_cli_swap_refuses_a_bad_blend_change_or_guidance(tmp_path, tiny_model_dir, flag, value, fragment):
    from tests.cli_helpers import run

    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 240, np.uint8)).save(tmp_path / "grey.png")
    result = run("swap", tmp_path / "grey.png", "-s", SOURCE, "-t", TARGET, flag, value,
                 "--model", tiny_model_dir, "-q", "-o", tmp_path / "out.png")
    assert result.exit_code != 0 and fragment in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("flag, value, recorded", [
    ("--late-guidance", "2", {"late_guidance": 2.0, "guidance_steps": 0.3, "mask_guidance": None}),
    ("--mask-guidance", "3", {"late_guidance": None, "guidance_steps": None, "mask_guidance": 3.0})])
def test_cli_swap_late_or_mask_guidance_changes_the_edit_and_is_recorded(tmp_path, tiny_model_dir, flag, value,
                                                                          recorded):
    """Each changes the edit at the same cost (both are off by default); the parameters say what ran."""
    import json

    from PIL import Image

    from ddim_edit.images import read_parameters

    from tests.cli_helpers import run

    write_box_photo(tmp_path / "red.png", **RED_BOX)
    common = ["--model", tiny_model_dir, "-q", "--format", "json", "--steps", "4", "-s", SOURCE, "-t", TARGET]
    given = run("swap", tmp_path / "red.png", flag, value, "-o", tmp_path / "a.png", *common)
    default = run("swap", tmp_path / "red.png", "-o", tmp_path / "b.png", *common)
    assert given.exit_code == 0 and default.exit_code == 0, given.output + default.output
    first, second = read_parameters(tmp_path / "a.png"), read_parameters(tmp_path / "b.png")
    assert {key: first[key] for key in recorded} == recorded
    assert all(second[key] is None for key in recorded)
    assert json.loads(given.stdout)["unet_evaluations"] == json.loads(default.stdout)["unet_evaluations"]
    a, b = (np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png"))
    assert not np.array_equal(a, b)

"""The CLI on real image files: invert → reconstruct, JSON output, bad input → one line, exit 1."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.cli_helpers import one_line_error, run


@pytest.fixture()
def photo(tmp_path):
    image = np.full((40, 48, 3), 240, np.uint8)
    image[8:30, 10:34] = (200, 40, 40)
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    return path


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


def test_reconstruct_uses_the_trajectory_model_by_default(tmp_path, photo, tiny_model_dir):
    traj = tmp_path / "t.traj.safetensors"
    assert run("invert", photo, "-p", "a cat", "--model", tiny_model_dir, "--steps", "3", "-o", traj, "-q").exit_code == 0
    result = run("reconstruct", traj, "-o", tmp_path / "r.png", "-q")
    assert result.exit_code == 0, result.output
    outputs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        result = run("reconstruct", traj, "-o", tmp_path / f"{name}.png", "-q", "--eta", "1", "--seed", seed)
        assert result.exit_code == 0, result.output
        outputs.append(np.asarray(Image.open(tmp_path / f"{name}.png")))
    assert (outputs[0] == outputs[1]).all() and not (outputs[0] == outputs[2]).all()
    one_line_error(run("reconstruct", traj, "-o", tmp_path / "d.png", "--eta", "-1"), "--eta")


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


def test_reconstruct_bad_trajectories(tmp_path, photo, tiny_model_dir):
    bad = tmp_path / "bad.traj.safetensors"
    bad.write_bytes(b"garbage")
    one_line_error(run("reconstruct", bad, "--model", tiny_model_dir, "-o", tmp_path / "r.png"), "corrupt")
    one_line_error(run("reconstruct", tmp_path / "none.traj.safetensors", "-o", tmp_path / "r.png"), "does not exist")
    # made with another model
    traj = tmp_path / "t.traj.safetensors"
    assert run("invert", photo, "-p", "a cat", "--model", tiny_model_dir, "--steps", "3", "-o", traj, "-q").exit_code == 0
    from ddim_edit.testing import tiny_pipeline

    other = tmp_path / "other-model"
    tiny_pipeline(seed=9).save_pretrained(other)
    one_line_error(run("reconstruct", traj, "--model", other, "-o", tmp_path / "r.png"), "made with model")


def test_help_has_examples():
    for name in ("invert", "reconstruct", "bench"):
        result = run(name, "--help")
        assert result.exit_code == 0 and "Example" in result.output


def test_grid_is_written_beside_the_output(tmp_path, photo, tiny_model_dir):
    out = tmp_path / "blue.png"
    args = ["swap", photo, "-s", "a red square", "-t", "a blue square", "--model", tiny_model_dir, "--steps", 3,
            "-o", out, "--grid", "-q"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (48, 40)  # the edit alone, at the source's size
    grid = Image.open(tmp_path / "blue.grid.png")
    assert grid.size[0] > 3 * grid.size[1] / 2  # source | reconstruction | edit, side by side
    from ddim_edit.images import read_parameters

    assert read_parameters(tmp_path / "blue.grid.png")["grid"] == ["source", "reconstruction", "edit"]
    out.unlink()  # the grid alone is still an output that exists: refused before any work
    one_line_error(run(*args), "blue.grid.png already exists", "--force")
    assert not out.exists()


def test_swap_without_a_source_prompt_names_the_flag_it_has(tmp_path, photo, tiny_model_dir):
    result = run("swap", photo, "-t", "a blue square", "--model", tiny_model_dir, "-o", tmp_path / "x.png")
    one_line_error(result, "--source is missing")
    assert "--unconditional" not in result.stderr


def test_inpaint_help_shows_its_own_default_method():
    text = run("inpaint", "--help").output
    assert "[default: ddim]" in " ".join(text.split()) and "unless --method" not in text


@pytest.mark.parametrize("name", ["invert", "swap", "inpaint", "style", "demo", "batch"])
def test_help_names_the_toy_model_grammar(name):
    from ddim_edit.toy.vocabulary import GRAMMAR_HINT

    assert GRAMMAR_HINT[1:] in " ".join(run(name, "--help").output.split())


def test_demo_writes_the_edit_and_its_grid(tmp_path):
    from ddim_edit.images import load_image
    from ddim_edit.toy.reader import read_scene

    out = tmp_path / "demo.png"
    result = run("demo", "-o", out, "--steps", 20, "-q")
    assert result.exit_code == 0, result.output
    edit = read_scene(load_image(out))
    assert (edit.color, edit.shape, edit.fill, edit.background) == ("blue", "circle", "solid", "white")
    assert load_image(tmp_path / "demo.grid.png").shape[0] >= 192  # enlarged to be read
    one_line_error(run("demo", "-o", out, "--steps", 20, "-q"), "already exists")

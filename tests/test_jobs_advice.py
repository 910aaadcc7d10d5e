"""ddim_edit.jobs.advice: the bundled toy model says, in one line, what it does not know."""

import numpy as np
import pytest
from PIL import Image

from ddim_edit.jobs.advice import image_advice, prompt_advice, usual_round_trip_db
from ddim_edit.model import load_model
from ddim_edit.toy.vocabulary import GRAMMAR_HINT
from ddim_edit.toy.world import render, Scene
from tests.cli_helpers import run


CAPTION = "a solid red circle on a white background"


def test_unknown_words_are_named_once_across_prompts():
    line = prompt_advice(["a cat on a sofa", "a dog on a sofa"])
    assert "'cat', 'sofa', 'dog' are unknown" in line and "--model" in line and "\n" not in line
    assert "'cat' is unknown" in prompt_advice(["a cat"])


def test_a_prompt_outside_the_grammar_gets_the_grammar():
    line = prompt_advice(["a red circle on a white background"])  # every word known, the fill missing
    assert line.startswith("'a red circle on a white background' is outside") and GRAMMAR_HINT in line


@pytest.mark.parametrize("prompts", [[CAPTION], ["", "  "], ["An Outlined blue star on a beige background"], []])
def test_captions_and_empty_prompts_need_no_advice(prompts):
    assert prompt_advice(prompts) is None


@pytest.fixture(scope="module")
def toy():
    return load_model("toy", device="cpu")


def test_a_toy_scene_passes_and_a_photo_like_image_is_flagged(toy):
    scene = render(Scene(shape="circle", color="red", fill="solid", background="white", cx=32, cy=32, size=40))
    assert image_advice(toy, scene) is None
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)  # texture the shape world never has
    line = image_advice(toy, photo)
    assert line is not None and f"≥ {usual_round_trip_db():.1f} dB" in line and "colour blobs" in line


def _photo(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
    return path


def test_the_cli_warns_in_one_line_each_with_the_toy_model(tmp_path):
    result = run("invert", _photo(tmp_path), "-p", "a cat on a sofa", "--steps", 2, "-q", "-o", tmp_path / "t.safetensors")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 2, result.stderr
    assert "'cat', 'sofa' are unknown" in warnings[0] and "reproduces this image at" in warnings[1]
    assert "Traceback" not in result.output and "UserWarning" not in result.stderr


def test_the_toy_model_on_its_own_world_and_other_models_warn_nothing(tmp_path, tiny_model_dir):
    scene = tmp_path / "scene.png"
    Image.fromarray(render(Scene(shape="square", color="blue", fill="striped", background="gray", cx=30, cy=34,
                                 size=38))).save(scene)
    quiet = run("invert", scene, "-p", "a striped blue square on a gray background", "--steps", 2, "-q",
                "-o", tmp_path / "a.safetensors")
    other = run("invert", _photo(tmp_path), "-p", "a cat on a sofa", "--model", tiny_model_dir, "--steps", 2, "-q",
                "-o", tmp_path / "b.safetensors")
    for result in (quiet, other):
        assert result.exit_code == 0, result.output
        assert "Warning" not in result.stderr, result.stderr

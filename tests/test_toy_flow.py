"""The bundled toy flow model (``assets/toy-flow-model``, ``--model toy-flow``): plain diffusers loads it
offline, it draws its captions, it is small, and the CLI runs on it."""

from __future__ import annotations

import json

import pytest
import torch

from ddim_edit.model import load_model, model_reference, toy_model_path
from ddim_edit.toy.world import sample_scenes
from tests.cli_helpers import SOURCE, TARGET, run

FOLDER = toy_model_path("toy-flow")


@pytest.fixture(scope="module")
def pipeline(offline_module):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(FOLDER, text_encoder_3=None, tokenizer_3=None,
                                                    local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def offline_module():
    with pytest.MonkeyPatch.context() as patch:
        import huggingface_hub.constants as hub_constants

        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
        yield


def test_plain_diffusers_loads_it_offline_and_it_draws_its_captions(pipeline):
    """Regression guard (the full measurement is ``toy.evaluate``): unseen captions, 20 Euler steps,
    scored by the attribute reader; colour and background are what the model card measures."""
    from ddim_edit.toy.evaluate import text_to_image
    from ddim_edit.toy.reader import attribute_accuracy

    assert type(pipeline.transformer).__name__ == "SD3Transformer2DModel" and pipeline.text_encoder_3 is None
    scenes = sample_scenes(2000, 8)
    images = text_to_image(pipeline, scenes, steps=20, guidance=5.0, seed=0)
    assert images.shape == (8, 64, 64, 3)
    accuracy = attribute_accuracy(list(images), scenes)
    assert accuracy["color"] >= 0.75 and accuracy["background"] >= 0.75, accuracy
    shifted = attribute_accuracy(list(images), scenes[1:] + scenes[:1])  # captions of other scenes
    assert shifted["all"] <= 0.25


def test_it_is_at_most_15_mb_and_shares_the_bundled_vae():
    from safetensors.torch import load_file

    size = sum(path.stat().st_size for path in FOLDER.rglob("*") if path.is_file())
    assert size <= 15e6, size
    ours = load_file(FOLDER / "vae" / "diffusion_pytorch_model.safetensors")
    bundled = load_file(toy_model_path() / "vae" / "diffusion_pytorch_model.safetensors")
    assert ours.keys() == bundled.keys() and all(torch.equal(ours[key], bundled[key]) for key in ours)


def test_the_alias_loads_our_adapter_and_is_recorded_as_itself():
    model = load_model("toy-flow")
    assert model.family == "sd3" and model.name == "toy-flow" and model_reference("toy-flow") == "toy-flow"
    assert model.native_size == 64


def test_the_cli_inverts_and_edits_with_it(tmp_path):
    from ddim_edit.model import assets_dir

    red = assets_dir() / "examples" / "red-circle.png"
    traj = tmp_path / "red.traj.safetensors"
    result = run("invert", red, "-p", SOURCE, "--model", "toy-flow", "--steps", "10", "-o", traj, "-q")
    assert result.exit_code == 0, result.output
    swapped = run("swap", traj, "-t", TARGET, "-o", tmp_path / "blue.png", "--format", "json", "-q")
    assert swapped.exit_code == 0, swapped.output  # the trajectory names its model: toy-flow
    flowedit = run("swap", red, "-s", SOURCE, "-t", TARGET, "--model", "toy-flow", "--method", "flowedit",
                   "--steps", "10", "-o", tmp_path / "fe.png", "--format", "json", "-q")
    assert flowedit.exit_code == 0, flowedit.output
    assert json.loads(flowedit.stdout)["unet_evaluations"] == 7 * 4

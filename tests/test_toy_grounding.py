"""The token-grounding fine-tune of the toy model: its roles, its loss in closed form, its recorder, end to end."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors.torch import load_file

from ddim_edit.errors import OutputError
from ddim_edit.testing import tiny_pipeline
from ddim_edit.toy.grounding import (
    BACKGROUND,
    OBJECT,
    AttentionRecorder,
    GroundingConfig,
    finetune,
    grounding_loss,
    token_roles,
)
from ddim_edit.toy.train import TrainConfig, train
from ddim_edit.toy.world import Scene, caption


@pytest.mark.parametrize("fill", ["solid", "outlined"])  # "a solid …" / "an outlined …": same positions
def test_token_roles_mark_the_object_and_background_words(fill):
    scene = Scene(shape="star", color="red", fill=fill, background="gray")
    roles = token_roles(scene, caption(scene).split(), 12)
    # <start> a/an fill colour shape on a gray background <end> …
    assert roles.tolist() == [0, 0, OBJECT, OBJECT, OBJECT, 0, 0, BACKGROUND, BACKGROUND, 0, 0, 0]
    with pytest.raises(ValueError, match="one token per word"):
        token_roles(scene, ["r", "ed"] + caption(scene).split()[2:], 12)


def _layer(maps: torch.Tensor, heads: int = 2) -> tuple[int, torch.Tensor]:
    """A recorded layer whose every head has ``maps`` [B, Q, L] (rows: queries' distributions over tokens)."""
    batch, queries, length = maps.shape
    return heads, maps[:, None].expand(batch, heads, queries, length).reshape(batch * heads, queries, length)


def test_grounding_loss_is_the_mass_off_each_words_region():
    side, length = 8, 4
    region = torch.zeros(1, 1, 32, 32)
    region[..., :16, :] = 1.0  # the object: the top half of the image
    on_object = torch.zeros(side, side)
    on_object[:4] = 1.0
    top = on_object.flatten()
    # Every query's row sums to 4 (the start token takes the rest), so dividing by 4 keeps the densities.
    scores = torch.stack([
        2 - 1.5 * top,  # start token
        2 * top,  # token 1 only on the object
        torch.ones_like(top),  # token 2 uniform over the image
        1 - 0.5 * top,  # token 3 twice as dense on the background
    ], dim=-1)
    maps = (scores / 4)[None]
    roles = torch.tensor([[0.0, OBJECT, OBJECT, BACKGROUND]])
    # Per token the map is renormalised over the image: token 1 has all its mass on the object (loss 0),
    # token 2 half (loss 0.5), token 3 a third on the object, so two thirds on its region (loss 1/3).
    per_word = torch.tensor([0.0, 0.5, 1 / 3])
    expected = per_word.mean()
    assert torch.allclose(grounding_loss([_layer(maps)], region, roles), expected, atol=1e-6)
    coarse = _layer(torch.full((1, 16, length), 1.0 / length))  # a 4 × 4 layer: left out at min_side 8
    assert torch.allclose(grounding_loss([_layer(maps), coarse], region, roles), expected, atol=1e-6)
    assert torch.allclose(grounding_loss([_layer(maps)], region, torch.zeros_like(roles)), torch.tensor(0.0))
    with pytest.raises(ValueError, match="at least 8 positions"):
        grounding_loss([coarse], region, roles)


def test_attention_recorder_matches_the_default_processor_and_keeps_cross_attention_only():
    unet = tiny_pipeline().unet.eval()
    torch.manual_seed(0)
    latents, context = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    unet.set_attn_processor(AttnProcessor2_0())
    with torch.no_grad():
        expected = unet(latents, 10, context).sample
    recorder = AttentionRecorder()
    unet.set_attn_processor(recorder)
    with torch.no_grad():
        got = unet(latents, 10, context).sample
    assert torch.allclose(got, expected, atol=1e-5)
    cross_layers = sum(1 for name in unet.attn_processors if name.endswith("attn2.processor"))
    assert len(recorder.records) == cross_layers > 0
    for heads, probabilities in recorder.records:
        assert probabilities.shape[0] == 2 * heads and probabilities.shape[-1] == 77
        assert torch.allclose(probabilities.sum(-1), torch.ones(probabilities.shape[:-1]), atol=1e-5)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy") / "base"
    train(TrainConfig(out=str(folder), vae_steps=2, unet_steps=2, n_train=8, vae_batch=4, unet_batch=4,
                      threads=torch.get_num_threads(), state=str(folder.parent / "state.pt")))
    return folder


def _config(base, out, **kw) -> GroundingConfig:
    settings = dict(steps=2, batch=4, threads=torch.get_num_threads())
    return GroundingConfig(model=str(base), out=str(out), **{**settings, **kw})


def test_finetune_is_seeded_keeps_the_format_and_logs_itself(base_model, tmp_path):
    log = finetune(_config(base_model, tmp_path / "a"))
    assert log["steps"] == 2 and log["token_loss_first"] is not None
    saved = json.load(open(tmp_path / "a" / "training_log.json"))
    assert saved["grounding"]["weight"] == 0.02 and saved["unet_steps"] == 2  # the base's log is kept
    assert saved["grounding"]["n_train_scenes"] == 8  # on the base model's own training scenes
    pipeline = StableDiffusionPipeline.from_pretrained(tmp_path / "a")
    assert (tmp_path / "a" / "tokenizer" / "merges.txt").exists()
    assert pipeline.tokenizer("a solid red circle").input_ids == StableDiffusionPipeline.from_pretrained(
        base_model).tokenizer("a solid red circle").input_ids

    base = load_file(str(base_model / "unet" / "diffusion_pytorch_model.safetensors"))
    finetune(_config(base_model, tmp_path / "b"))
    first = load_file(str(tmp_path / "a" / "unet" / "diffusion_pytorch_model.safetensors"))
    second = load_file(str(tmp_path / "b" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(first[k], second[k]) for k in first)  # seeded
    assert not all(torch.equal(first[k], base[k]) for k in first)  # and it trained
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_finetune_refuses_to_replace_a_folder_without_force(base_model, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "README.md").write_text("an earlier model's card")
    with pytest.raises(OutputError, match="pass --force"):
        finetune(_config(base_model, out))
    assert (out / "README.md").read_text() == "an earlier model's card"


def test_model_card_describes_the_grounding_only_when_the_log_has_it(tmp_path):
    from pathlib import Path

    from ddim_edit.toy.evaluate import write_model_card

    bundled = Path(__file__).resolve().parents[1] / "assets" / "toy-model"
    results = json.load(open(bundled / "evaluation.json"))
    log = json.load(open(bundled / "training_log.json"))
    (tmp_path / "training_log.json").write_text(json.dumps(log))
    assert "Token grounding" not in open(write_model_card(str(tmp_path), results)).read()
    log["grounding"] = {"command": "python -m ddim_edit.toy.grounding --model m --out o", "steps": 1500,
                        "minutes": 16.3, "batch": 32, "lr": 1e-4, "weight": 0.02, "min_side": 8,
                        "token_loss_first": 0.53, "token_loss_last100": 0.03, "diffusion_loss_first": 0.0067,
                        "diffusion_loss_last100": 0.0066, "ema_decay": 0.995}
    (tmp_path / "training_log.json").write_text(json.dumps(log))
    card = open(write_model_card(str(tmp_path), results)).read()
    assert "## Token grounding" in card and "`python -m ddim_edit.toy.grounding --model m --out o`" in card
    assert "Token loss 0.53 -> 0.03" in card


def test_finetune_names_a_folder_that_is_not_a_pipeline(tmp_path, capsys):
    from ddim_edit.toy.grounding import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "is not a pipeline folder" in error[0] and not (tmp_path / "out").exists()


def test_help_shows_an_example(capsys):
    from ddim_edit.toy.grounding import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "python -m ddim_edit.toy.grounding --model assets/toy-model --out" in capsys.readouterr().out

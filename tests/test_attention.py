"""The attention processor base: same outputs as diffusers' default, clean install/remove."""

import torch

from ddim_edit.attention import EditAttnProcessor, attention_layers, installed_processors, processors_for


def _unet_output(unet):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    text = torch.randn(2, 77, 32)
    with torch.no_grad():
        return unet(x, torch.tensor([500, 500]), encoder_hidden_states=text).sample


def test_layers_are_named_and_classified(tiny_pipe):
    layers = attention_layers(tiny_pipe.unet)
    assert layers and all(layer.name.endswith(".processor") for layer in layers)
    assert {layer.is_cross for layer in layers} == {True, False}
    assert {layer.place for layer in layers} <= {"down", "mid", "up"}


def test_base_processor_matches_default_and_uninstalls_bitwise(tiny_pipe):
    unet = tiny_pipe.unet
    before = _unet_output(unet)
    with installed_processors(unet, processors_for(unet, EditAttnProcessor)):
        during = _unet_output(unet)
    after = _unet_output(unet)
    assert torch.equal(before, after)
    assert torch.allclose(before, during, atol=1e-6)

"""The attention processor base: same outputs as diffusers' default, clean install/remove."""

import torch

from ddim_edit.attention import EditAttnProcessor, attention_sites, installed_processors, processors_for


def _unet_output(unet):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    text = torch.randn(2, 77, 32)
    with torch.no_grad():
        return unet(x, torch.tensor([500, 500]), encoder_hidden_states=text).sample


def test_sites_are_named_and_tagged_by_role_stage_and_level(tiny_pipe):
    sites = attention_sites(tiny_pipe.unet)
    assert sites and all(site.name.endswith(".processor") for site in sites)
    assert {site.role for site in sites} == {"self", "cross"}
    assert all((site.role == "cross") == (".attn2." in site.name) for site in sites)
    levels = len(tiny_pipe.unet.config.block_out_channels)
    for site in sites:  # down_blocks.i sits at level i, up_blocks.j at levels − 1 − j, the mid block at the coarsest
        block = site.name.split(".")[1]
        expected = {"encoder": lambda: int(block), "middle": lambda: levels - 1,
                    "decoder": lambda: levels - 1 - int(block)}[site.stage]()
        assert site.level == expected and site.name.split(".")[0] == {"encoder": "down_blocks", "middle": "mid_block",
                                                                    "decoder": "up_blocks"}[site.stage]
    assert attention_sites(tiny_pipe.unet, roles=("self",), stages=("decoder",)) == [
        site for site in sites if site.role == "self" and site.stage == "decoder"]


def test_base_processor_matches_default_and_uninstalls_bitwise(tiny_pipe):
    unet = tiny_pipe.unet
    before = _unet_output(unet)
    with installed_processors(unet, processors_for(attention_sites(unet), EditAttnProcessor)):
        during = _unet_output(unet)
    after = _unet_output(unet)
    assert torch.equal(before, after)
    assert torch.allclose(before, during, atol=1e-6)

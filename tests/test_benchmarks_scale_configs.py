"""The real-size configs of the scale benchmark (benchmarks/scale_configs.py)."""

import pytest
import torch

from benchmarks.scale_configs import (FLUX_DEPTH, FLUX_TRANSFORMER, SD15_UNET, SDXL_UNET, SD3_TRANSFORMER, T5_XXL,
                                      _meta_module, component_factories, meta_parameter_counts, parameter_count)


def test_real_configs_are_sd15_and_sdxl_base():
    # the numbers that make the UNets what they are (public unet/config.json of both repos)
    assert SD15_UNET["block_out_channels"] == (320, 640, 1280, 1280) and SD15_UNET["cross_attention_dim"] == 768
    assert SDXL_UNET["transformer_layers_per_block"] == (1, 2, 10) and SDXL_UNET["cross_attention_dim"] == 2048
    assert SDXL_UNET["projection_class_embeddings_input_dim"] == 2816


@pytest.mark.parametrize("arch", ["sd3", "flux"])
def test_flow_configs_build_on_the_meta_device(arch):
    """Every component builds without allocating a parameter (T5's token embedding tied, as loaded)."""
    for name, (factory, _) in component_factories(arch)["modules"].items():
        module = _meta_module(factory)
        assert all(param.is_meta for param in module.parameters()), name
        if name == "text_encoder_2" and arch == "flux":
            assert module.encoder.embed_tokens.weight is module.shared.weight


def test_sd3_is_sd3_medium_without_t5():
    counts = meta_parameter_counts("sd3")
    assert counts["transformer"] == 2_028_328_000  # SD3-medium's MMDiT, ≈ 2.0 B
    assert counts["text_encoder"] == 123_650_304 and counts["text_encoder_2"] == 694_659_840  # CLIP-L, CLIP-G (+ proj)
    assert 83e6 < counts["vae"] < 85e6 and "text_encoder_3" not in counts
    assert SD3_TRANSFORMER["pos_embed_max_size"] == 192 and SD3_TRANSFORMER["caption_projection_dim"] == 1536


def test_flux_is_flux1_dev_at_reduced_depth():
    from diffusers import FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    counts = meta_parameter_counts("flux")
    assert FLUX_DEPTH == {"num_layers": 2, "num_single_layers": 4}
    assert 1.30e9 < counts["transformer"] < 1.32e9 and counts["text_encoder"] == 123_060_480
    assert counts["text_encoder_2"] == 517_494_784  # 2 T5-XXL layers + the 32 128 × 4096 embedding, once
    # at full depth the same configs are FLUX.1-dev's transformer (11.9 B) and T5 v1.1 XXL's encoder (4.76 B)
    full = dict(FLUX_TRANSFORMER, num_layers=19, num_single_layers=38)
    assert parameter_count(_meta_module(lambda: FluxTransformer2DModel(**full))) == 11_901_408_320
    assert parameter_count(_meta_module(lambda: T5EncoderModel(T5Config(**dict(T5_XXL, num_layers=24)))))\
        == 4_762_310_656
    assert torch.float32  # nothing above allocated a weight (meta device)

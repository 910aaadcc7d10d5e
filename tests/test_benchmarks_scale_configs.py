"""The real-size UNet configs of the scale benchmark (benchmarks/scale_configs.py)."""

from benchmarks.scale_configs import SD15_UNET, SDXL_UNET


def test_real_configs_are_sd15_and_sdxl_base():
    # the numbers that make the UNets what they are (public unet/config.json of both repos)
    assert SD15_UNET["block_out_channels"] == (320, 640, 1280, 1280) and SD15_UNET["cross_attention_dim"] == 768
    assert SDXL_UNET["transformer_layers_per_block"] == (1, 2, 10) and SDXL_UNET["cross_attention_dim"] == 2048
    assert SDXL_UNET["projection_class_embeddings_input_dim"] == 2816

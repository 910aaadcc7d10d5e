"""The single-file ``.safetensors`` path of ``load_model`` (ddim_edit/model.py), for real and offline."""

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from ddim_edit.errors import ModelLoadError
from ddim_edit.model import EditModel, load_model
from ddim_edit.sampler import Conditioning, sample
from ddim_edit.text_encoding import token_ids
from ddim_edit.schedule import Schedule
from ldm_layout import plain_config, to_ldm_state_dict


@pytest.fixture(scope="module")
def source_pipe():
    """The weights written to the single file: same architecture as ``tiny_pipe`` (whose
    ``save_pretrained`` folder serves as the config) but other random weights, so that a match
    proves the weights came from the file and not from the config folder."""
    from ddim_edit.testing import tiny_pipeline

    return tiny_pipeline(seed=7)


@pytest.fixture(scope="module")
def ldm_file(tmp_path_factory, source_pipe):
    path = tmp_path_factory.mktemp("single-file") / "model.safetensors"
    save_file(to_ldm_state_dict(source_pipe), str(path))
    return path


def test_file_is_in_original_ldm_layout(ldm_file, source_pipe):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    state = load_file(str(ldm_file))
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")
    assert all(k.startswith(prefixes) for k in state), sorted(k for k in state if not k.startswith(prefixes))[:5]
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in state), prefix
    assert not any(".down_blocks." in k or ".up_blocks." in k or ".mid_block." in k or ".resnets." in k for k in state)
    for key in ("model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.out.2.weight", "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
                "cond_stage_model.transformer.text_model.final_layer_norm.weight"):
        assert key in state, key
    # LDM VAE attention is made of 1×1 convs
    for name in ("q", "k", "v", "proj_out"):
        weight = state[f"first_stage_model.encoder.mid.attn_1.{name}.weight"]
        assert weight.ndim == 4 and weight.shape[2:] == (1, 1)
    # diffusers reads it as an SD 1.x checkpoint
    assert infer_diffusers_model_type(state) == "v1"
    n_weights = len(source_pipe.unet.state_dict()) + len(source_pipe.vae.state_dict())
    n_weights += sum(1 for k in source_pipe.text_encoder.state_dict() if not k.endswith("position_ids"))
    assert len(state) == n_weights


def test_single_file_loads_offline_with_identical_weights(offline, ldm_file, source_pipe, tiny_pipe, tiny_model_dir):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    loaded = load_model(str(ldm_file), device="cpu", config=str(tiny_model_dir))
    original = EditModel.from_pipeline(source_pipe, name="source", device="cpu")
    # the config folder's own weights differ: equality below means they were read from the file
    assert not torch.equal(tiny_pipe.unet.conv_in.weight, source_pipe.unet.conv_in.weight)

    for part in ("unet", "vae", "text_encoder"):
        ours = loaded.components()[part].state_dict()
        theirs = original.components()[part].state_dict()
        assert ours.keys() == theirs.keys(), part
        for key, value in theirs.items():
            assert ours[key].dtype == value.dtype, f"{part}.{key}"
            assert torch.equal(ours[key], value), f"{part}.{key} differs after the LDM round trip"
    assert plain_config(loaded.denoiser.config) == plain_config(original.denoiser.config)
    assert plain_config(loaded.vae.config) == plain_config(original.vae.config)
    bookkeeping = ("architectures", "dtype", "torch_dtype", "transformers_version", "_name_or_path")
    text_configs = [{k: v for k, v in m.text_encoder.config.to_dict().items() if k not in bookkeeping}
                    for m in (loaded, original)]
    assert text_configs[0] == text_configs[1]
    assert plain_config(loaded.scheduler_config) == plain_config(original.scheduler_config)
    prompt = "a red cat on a sofa"
    assert torch.equal(token_ids(loaded.tokenizer, [prompt]), token_ids(original.tokenizer, [prompt]))

    # The same short DDIM sample through ddim_edit gives identical latents.
    schedule = Schedule.from_scheduler_config(original.scheduler_config, num_steps=4)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    results = []
    for model in (loaded, original):
        cond = model.encode([prompt])
        uncond = model.encode_negative([""])
        with torch.no_grad():
            results.append(sample(model, schedule, x_T.clone(), Conditioning(cond, uncond), 5.0, progress=False))
    assert torch.isfinite(results[0]).all()
    assert torch.equal(results[0], results[1])
    assert torch.equal(loaded.decode_latents(results[0]), original.decode_latents(results[1]))


def test_single_file_without_config_fails_fast_offline(offline, ldm_file):
    # Without config diffusers would fetch the SD 1.5 configs from the hub: offline that must be
    # a ModelLoadError with a hint, not a hang or a traceback.
    with pytest.raises(ModelLoadError, match="offline"):
        load_model(str(ldm_file), device="cpu")


@pytest.mark.parametrize("down, up, layers", [
    (("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
     ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), 2),
    (("DownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "UpBlock2D"), 1),
])
def test_ldm_layout_is_generic_over_block_configs(down, up, layers):
    """Other block layouts (attention where the tiny model has none, upsamplers after attention,
    two layers per block) come back whole through diffusers' own LDM → diffusers converters."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from ldm_layout import unet_to_ldm, vae_to_ldm

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, layers_per_block=layers, block_out_channels=(8, 16, 16)[:len(down)],
        down_block_types=down, up_block_types=up, cross_attention_dim=8, attention_head_dim=4, norm_num_groups=4,
    )
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=2, norm_num_groups=4)
    for model, to_ldm, convert in ((unet, unet_to_ldm, convert_ldm_unet_checkpoint),
                                   (vae, vae_to_ldm, convert_ldm_vae_checkpoint)):
        back = convert(to_ldm(model), dict(model.config))
        original = model.state_dict()
        assert back.keys() == original.keys(), sorted(set(back) ^ set(original))[:5]
        for key, value in original.items():
            assert torch.equal(back[key], value), key

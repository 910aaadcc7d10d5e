"""The single-file ``.safetensors`` path of ``load_model`` (ddim_edit/model.py) for SDXL, for real and offline."""

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from ddim_edit.families import checkpoint_family
from ddim_edit.model import EditModel, load_model
from ddim_edit.sampler import Conditioning, sample
from ddim_edit.schedule import Schedule
from ddim_edit.text_encoding import token_ids
from ldm_layout_sdxl import clip_to_sgm, open_clip_to_sgm, to_sgm_state_dict, unet_to_sgm
from ldm_layout import plain_config, vae_to_ldm

SEED_CONFIG, SEED_FILE = 3, 11
WIDTH_2, LAYERS_2 = 48, 10  # ≥ 10 layers: diffusers' own xl_base detection looks for resblocks.9
PREFIXES = ("model.diffusion_model.", "first_stage_model.", "conditioner.embedders.0.transformer.text_model.",
            "conditioner.embedders.1.model.")


def wide_sdxl_pipeline(seed: int):
    """``tiny_sdxl_pipeline(seed)`` with a second text encoder WIDTH_2 wide and LAYERS_2 deep (the UNet's
    cross-attention width follows: 32 + WIDTH_2), other components as built there."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from ddim_edit.testing import tiny_sdxl_pipeline

    pipe = tiny_sdxl_pipeline(seed=seed)
    torch.manual_seed(seed + 1000)
    first = pipe.text_encoder.config
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(pipe.tokenizer_2), hidden_size=WIDTH_2, intermediate_size=2 * WIDTH_2,
        num_hidden_layers=LAYERS_2, num_attention_heads=4, max_position_embeddings=77, bos_token_id=0,
        eos_token_id=1, pad_token_id=1, projection_dim=pipe.text_encoder_2.config.projection_dim,
    ))
    unet = UNet2DConditionModel.from_config({**dict(pipe.unet.config),
                                             "cross_attention_dim": first.hidden_size + WIDTH_2})
    pipe.register_modules(unet=unet, text_encoder_2=text_encoder_2)
    return pipe


@pytest.fixture(scope="module")
def config_pipe():
    return wide_sdxl_pipeline(SEED_CONFIG)


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory, config_pipe):
    """Seed A saved as a diffusers folder: the config of the single file (its weights must not be used)."""
    path = tmp_path_factory.mktemp("sdxl-config") / "tiny-sdxl"
    config_pipe.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def source_pipe():
    """Seed B: the weights written to the single file."""
    return wide_sdxl_pipeline(SEED_FILE)


@pytest.fixture(scope="module")
def sgm_file(tmp_path_factory, source_pipe):
    path = tmp_path_factory.mktemp("sdxl-single-file") / "sdxl.safetensors"
    save_file(to_sgm_state_dict(source_pipe), str(path))
    return path


def _assert_same_weights(loaded, expected, what):
    assert loaded.keys() == expected.keys(), (what, sorted(set(loaded) ^ set(expected))[:5])
    for key, value in expected.items():
        assert loaded[key].device.type != "meta", f"{what}.{key} was never loaded"
        assert loaded[key].dtype == value.dtype, f"{what}.{key}"
        assert torch.equal(loaded[key], value), f"{what}.{key} differs after the SGM round trip"


def test_file_is_in_sgm_sdxl_layout(sgm_file, source_pipe):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    state = load_file(str(sgm_file))
    assert all(k.startswith(PREFIXES) for k in state), sorted(k for k in state if not k.startswith(PREFIXES))[:5]
    for prefix in PREFIXES:
        assert any(k.startswith(prefix) for k in state), prefix
    assert not any(".down_blocks." in k or ".up_blocks." in k or ".mid_block." in k or ".resnets." in k
                   or (k.startswith(PREFIXES[3]) and ".layers." in k) for k in state)
    for key in ("model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.label_emb.0.2.bias",
                "model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.output_blocks.0.1.transformer_blocks.0.attn2.to_k.weight",
                "model.diffusion_model.out.2.weight", "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
                "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
                "conditioner.embedders.1.model.token_embedding.weight", "conditioner.embedders.1.model.ln_final.bias",
                "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight",
                "conditioner.embedders.1.model.transformer.resblocks.0.attn.out_proj.weight"):
        assert key in state, key

    te2 = source_pipe.text_encoder_2
    width, projection = te2.config.hidden_size, te2.config.projection_dim
    assert state["conditioner.embedders.1.model.positional_embedding"].shape == (77, width)
    assert state["conditioner.embedders.1.model.text_projection"].shape == (width, projection)
    assert torch.equal(state["conditioner.embedders.1.model.text_projection"], te2.text_projection.weight.T)
    for n in range(LAYERS_2):
        attention = te2.text_model.encoder.layers[n].self_attn
        in_proj = state[f"conditioner.embedders.1.model.transformer.resblocks.{n}.attn.in_proj_weight"]
        assert in_proj.shape == (3 * width, width)
        assert torch.equal(in_proj, torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]))
    assert torch.equal(state["model.diffusion_model.label_emb.0.0.weight"], source_pipe.unet.add_embedding.linear_1.weight)

    # diffusers itself reads it as an SDXL base checkpoint, and so does ddim-edit (header only)
    assert infer_diffusers_model_type(state) == "xl_base"
    assert checkpoint_family(sgm_file) == "sdxl"
    n_weights = sum(len(getattr(source_pipe, name).state_dict()) for name in ("unet", "vae", "text_encoder"))
    n_weights += len(te2.state_dict()) - 4 * LAYERS_2  # q, k, v weights and biases (6) → in_proj weight and bias (2)
    assert len(state) == n_weights


def test_sdxl_single_file_loads_offline_with_identical_weights(offline, sgm_file, source_pipe, config_pipe,
                                                                config_dir):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    loaded = load_model(str(sgm_file), device="cpu", config=str(config_dir))
    original = EditModel.from_pipeline(source_pipe, name="source", device="cpu")
    assert isinstance(loaded, EditModel)
    assert loaded.family == "sdxl" and original.family == "sdxl"
    assert loaded.text_encoder_2 is not None and loaded.tokenizer_2 is not None
    assert loaded.force_zeros_for_empty_prompt == original.force_zeros_for_empty_prompt is True

    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ours = loaded.components()[part].state_dict()
        _assert_same_weights(ours, original.components()[part].state_dict(), part)
        # the config folder's own weights differ: equality above means they were read from the file
        seed_a = getattr(config_pipe, part).state_dict()
        assert any(not torch.equal(ours[k], seed_a[k]) for k in seed_a), f"{part} came from the config folder"

    assert plain_config(loaded.denoiser.config) == plain_config(original.denoiser.config)
    assert plain_config(loaded.vae.config) == plain_config(original.vae.config)
    bookkeeping = ("architectures", "dtype", "torch_dtype", "transformers_version", "_name_or_path")
    for part in ("text_encoder", "text_encoder_2"):
        configs = [{k: v for k, v in getattr(m, part).config.to_dict().items() if k not in bookkeeping}
                   for m in (loaded, original)]
        assert configs[0] == configs[1], part
    assert plain_config(loaded.scheduler_config) == plain_config(original.scheduler_config)
    prompt = "a red cat on a sofa"
    for tokenizer in ("tokenizer", "tokenizer_2"):
        assert torch.equal(token_ids(getattr(loaded, tokenizer), [prompt]), token_ids(getattr(original, tokenizer), [prompt]))

    # The same short DDIM sample through ddim_edit (both text encoders, pooled embeds, time ids,
    # zeroed empty negative) gives identical latents.
    schedule = Schedule.from_scheduler_config(original.scheduler_config, num_steps=4)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    results = []
    for model in (loaded, original):
        cond = model.encode([prompt])
        uncond = model.encode_negative([""])
        assert cond.hidden.shape[-1] == 32 + WIDTH_2
        with torch.no_grad():
            results.append(sample(model, schedule, x_T.clone(), Conditioning(cond, uncond), 5.0, progress=False))
    assert torch.isfinite(results[0]).all()
    assert torch.equal(results[0], results[1])
    assert torch.equal(loaded.decode_latents(results[0]), original.decode_latents(results[1]))


def test_converters_round_trip_tiny_sdxl():
    """``tiny_sdxl_pipeline`` itself (equal text encoder widths) through diffusers' own SGM → diffusers
    converter functions, component by component: every weight comes back."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    from ddim_edit.testing import tiny_sdxl_pipeline

    pipe = tiny_sdxl_pipeline(seed=5)
    te2 = pipe.text_encoder_2
    backs = {
        "unet": convert_ldm_unet_checkpoint(unet_to_sgm(pipe.unet), dict(pipe.unet.config)),
        "vae": convert_ldm_vae_checkpoint(vae_to_ldm(pipe.vae), dict(pipe.vae.config)),
        # CLIPTextModel is flat since transformers 5.6: diffusers strips text_model. the same way
        "text_encoder": {k.removeprefix("text_model."): v
                         for k, v in convert_ldm_clip_checkpoint(clip_to_sgm(pipe.text_encoder)).items()},
        "text_encoder_2": convert_open_clip_checkpoint(te2, open_clip_to_sgm(te2),
                                                       prefix="conditioner.embedders.1.model."),
    }
    for part, back in backs.items():
        original = {k: v for k, v in getattr(pipe, part).state_dict().items() if not k.endswith("position_ids")}
        _assert_same_weights(back, original, part)


def test_equal_text_encoder_widths_are_refused():
    """diffusers' from_single_file would load text encoder 1 into text encoder 2: no such file is written."""
    from ddim_edit.testing import tiny_sdxl_pipeline

    with pytest.raises(ValueError, match="both text encoders"):
        to_sgm_state_dict(tiny_sdxl_pipeline())


def test_unsupported_inputs_are_refused(tiny_pipe):
    with pytest.raises(ValueError, match="two text encoders"):
        to_sgm_state_dict(tiny_pipe)  # SD 1.x: one text encoder
    with pytest.raises(ValueError, match="text_time"):
        unet_to_sgm(tiny_pipe.unet)
    with pytest.raises(ValueError, match="CLIPTextModelWithProjection"):
        open_clip_to_sgm(tiny_pipe.text_encoder)

"""Tiny Stable-Diffusion-shaped pipelines built in code, for tests and offline smoke runs.

Real diffusers components (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer,
DDIMScheduler) with tiny configs and seeded random weights: the same code paths as real SD,
in milliseconds.
"""

from __future__ import annotations

import torch

WORDS = ("a photo of the cat dog red blue green yellow circle square triangle striped solid "
         "outlined on white black gray background sofa painting in style").split()


def tiny_pipeline(prediction_type: str = "epsilon", timestep_spacing: str = "leading", seed: int = 0,
                  sample_size: int = 8):
    """A StableDiffusionPipeline with tiny random components (latents 4×sample_size², images 4× that)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1, norm_num_groups=8, sample_size=sample_size * 4,
    )
    from .toy.components import build_tokenizer

    tokenizer = build_tokenizer(list(WORDS))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
        prediction_type=prediction_type, timestep_spacing=timestep_spacing,
    )
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def tiny_sdxl_pipeline(prediction_type: str = "epsilon", seed: int = 0, sample_size: int = 8,
                       force_zeros_for_empty_prompt: bool = True):
    """A StableDiffusionXLPipeline with tiny random components and SDXL's layout.

    SDXL's shape at a small scale: no attention in the first (highest-resolution) block, two
    transformer layers in the last, two text encoders (the second with a projection) whose hidden
    states are concatenated, ``text_time`` added conditioning, and an Euler scheduler config as the
    SDXL repos ship (edits run DDIM built from its betas).
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .toy.components import build_tokenizer

    torch.manual_seed(seed)
    time_dim, projection_dim = 8, 32
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 8), use_linear_projection=True,
        cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=projection_dim + 6 * time_dim, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1, norm_num_groups=8, sample_size=sample_size * 4, scaling_factor=0.13025,
        force_upcast=True,
    )
    tokenizer = build_tokenizer(list(WORDS))
    tokenizer_2 = build_tokenizer(list(WORDS))
    config = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    text_encoder = CLIPTextModel(CLIPTextConfig(**config))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config, projection_dim=projection_dim))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1, timestep_spacing="leading", prediction_type=prediction_type, interpolation_type="linear",
    )
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)


def write_tiny_lora(folder, seed: int = 1, rank: int = 4):
    """Write a LoRA for :func:`tiny_pipeline` (random, non-zero up-projections, as if trained) the
    way diffusers' training scripts save one; returns the ``.safetensors`` path."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = tiny_pipeline()
    torch.manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                     init_lora_weights=False))
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=state, safe_serialization=True)
    from pathlib import Path

    return Path(folder) / "pytorch_lora_weights.safetensors"

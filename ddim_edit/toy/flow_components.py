"""Build the toy flow model's components (a real Stable Diffusion 3-shaped pipeline, tiny) from
configs. Nothing here trains; :func:`load_bundled_vae` and :func:`load_bundled_text_encoder` read the
bundled toy model's trained parts, which the flow model starts from.

The pieces and their SD3 counterparts:

* two ``CLIPTokenizer`` copies of the bundled model's (one token per caption word);
* ``CLIPTextModelWithProjection`` ×2 (CLIP-L's and CLIP-G's places): 128 wide / 3 layers (started from
  the bundled model's trained text encoder) and 64 wide / 2 layers; no T5 (the pipeline then fills
  T5's 256 positions with zeros, as for SD3 loaded without it);
* ``SD3Transformer2DModel``: 4 joint (MMDiT) blocks, 128 wide, 4 heads, 2×2 patches of the 16×16×4
  latents (64 image tokens);
* ``AutoencoderKL``: the bundled model's trained VAE, with ``shift_factor`` 0;
* ``FlowMatchEulerDiscreteScheduler``: SD3's (shift 3).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from .components import LATENT_CHANNELS, TEXT_CONFIG, build_tokenizer
from .world import BASE_SIZE

__all__ = [
    "FLOW_SCHEDULER_CONFIG",
    "TEXT_2_CONFIG",
    "TRANSFORMER_CONFIG",
    "build_flow_pipeline",
    "build_flow_scheduler",
    "build_text_encoder_2",
    "build_transformer",
    "load_bundled_text_encoder",
    "load_bundled_vae",
]

TEXT_2_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=TEXT_CONFIG["max_position_embeddings"],
    hidden_act="gelu",
    projection_dim=64,
)

TRANSFORMER_CONFIG = dict(
    sample_size=BASE_SIZE // 4,
    patch_size=2,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    num_layers=4,
    attention_head_dim=32,
    num_attention_heads=4,
    caption_projection_dim=128,
    # the two CLIPs' penultimate states side by side (128 + 64), as SD3 puts CLIP-L's and CLIP-G's
    joint_attention_dim=TEXT_CONFIG["hidden_size"] + TEXT_2_CONFIG["hidden_size"],
    pooled_projection_dim=TEXT_CONFIG["projection_dim"] + TEXT_2_CONFIG["projection_dim"],
    # sin-cos positions for up to 16×16 patches (128-px images); SD3's 96 would store a 4.7 MB table
    pos_embed_max_size=16,
)

FLOW_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0)
"""SD3's scheduler config."""


def build_transformer(seed: int = 0) -> SD3Transformer2DModel:
    """A randomly initialised SD3-shaped MMDiT for 16×16×4 latents."""
    torch.manual_seed(seed)
    return SD3Transformer2DModel(**TRANSFORMER_CONFIG)


def build_text_encoder_2(tokenizer: CLIPTokenizer, seed: int = 0) -> CLIPTextModelWithProjection:
    """The second (CLIP-G's place) text encoder, randomly initialised."""
    torch.manual_seed(seed + 1)
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **TEXT_2_CONFIG))


def load_bundled_vae(bundled: str | Path) -> AutoencoderKL:
    """The bundled toy model's VAE with ``shift_factor`` 0 (SD3's pipeline subtracts it)."""
    vae = AutoencoderKL.from_pretrained(Path(bundled) / "vae")
    vae.register_to_config(shift_factor=0.0)
    return vae.eval()


def load_bundled_text_encoder(bundled: str | Path, seed: int = 0) -> CLIPTextModelWithProjection:
    """The bundled toy model's trained ``CLIPTextModel`` as a ``CLIPTextModelWithProjection`` (CLIP-L's
    place); the projection, which the bundled model lacks, starts random."""
    trained = CLIPTextModel.from_pretrained(Path(bundled) / "text_encoder")
    torch.manual_seed(seed + 2)
    encoder = CLIPTextModelWithProjection(trained.config)
    encoder.text_model.load_state_dict(trained.state_dict())
    return encoder


def build_flow_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(**FLOW_SCHEDULER_CONFIG)


def build_flow_pipeline(vae: AutoencoderKL, text_encoder: CLIPTextModelWithProjection,
                        text_encoder_2: CLIPTextModelWithProjection,
                        transformer: SD3Transformer2DModel) -> StableDiffusion3Pipeline:
    """Assemble the ``StableDiffusion3Pipeline`` (no T5)."""
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=build_flow_scheduler(), vae=vae,
        text_encoder=text_encoder, tokenizer=build_tokenizer(),
        text_encoder_2=text_encoder_2, tokenizer_2=build_tokenizer(),
        text_encoder_3=None, tokenizer_3=None)

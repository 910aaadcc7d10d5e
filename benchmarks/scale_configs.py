"""Real SD 1.5 and SDXL base 1.0 architectures with random weights, built in code (no hub).

The configs are those of the public repos (``stable-diffusion-v1-5/stable-diffusion-v1-5`` and
``stabilityai/stable-diffusion-xl-base-1.0``: ``unet/config.json``, ``vae/config.json``,
``text_encoder*/config.json``, ``scheduler/scheduler_config.json``), written out here. Weights are
random: modules are built on the ``meta`` device (no init cost) and each parameter is then
allocated on the target device and filled with N(0, 1/fan_in) (norm weights 1, biases 0), enough
to keep activations finite; outputs mean nothing, only cost is measured. The tokenizer is built
in memory over a small word list (:func:`ddim_edit.toy.components.build_tokenizer`); the text
encoders keep CLIP's real 49 408-token embedding tables.

``tiny`` / ``tiny-xl`` are :mod:`ddim_edit.testing`'s tiny pipelines, for the fast test.
"""

from __future__ import annotations

import math

import torch

ARCHES = ("sd15", "sdxl", "tiny", "tiny-xl")

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1,
)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
    cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1,
)
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, act_fn="silu",
)
SD15_VAE = dict(VAE, sample_size=512, scaling_factor=0.18215)
SDXL_VAE = dict(VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
CLIP_BIG_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                  num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                steps_offset=1, timestep_spacing="leading")

WORDS = ("a photo of the cat dog red blue green yellow circle square triangle striped solid outlined on white "
         "black gray background sofa painting in style").split()


def _fill(module: torch.nn.Module, device: torch.device, dtype: torch.dtype, generator: torch.Generator) -> None:
    """Allocate every meta parameter on ``device`` in ``dtype`` and fill it (see the module docstring)."""
    for sub in module.modules():
        norm = isinstance(sub, (torch.nn.GroupNorm, torch.nn.LayerNorm))
        for name, param in list(sub._parameters.items()):
            if param is None:
                continue
            tensor = torch.empty(param.shape, dtype=dtype, device=device)
            if norm and name == "weight":
                tensor.fill_(1.0)
            elif name == "bias" or param.ndim < 2:
                tensor.zero_()
            else:
                fan_in = math.prod(param.shape[1:])
                std = 0.02 if isinstance(sub, torch.nn.Embedding) else 1.0 / math.sqrt(fan_in)
                if device.type == "cpu":
                    tensor.normal_(0.0, std, generator=generator)
                else:
                    tensor.normal_(0.0, std)
            sub._parameters[name] = torch.nn.Parameter(tensor, requires_grad=False)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = buffer.to(device)


def _build(factory, device: torch.device, dtype: torch.dtype, seed: int):
    from accelerate import init_empty_weights

    with init_empty_weights():
        module = factory()
    generator = torch.Generator("cpu").manual_seed(seed)
    if device.type != "cpu":
        torch.manual_seed(seed)
    _fill(module, device, dtype, generator)
    return module.eval()


def _clip_config(base: dict, tokenizer, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**base, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, **extra)


def build_pipeline(arch: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The diffusers pipeline of ``arch`` (``sd15``, ``sdxl``, ``tiny``, ``tiny-xl``) with a DDIM scheduler.

    Components are allocated on ``device`` (VAE in float32 when ``dtype`` is fp16, as
    :meth:`~ddim_edit.model.EditModel.from_pipeline` keeps it); the scheduler is
    ``DDIMScheduler`` (``clip_sample=False``, ``set_alpha_to_one=False``) with SD's betas.
    """
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from ddim_edit.toy.components import build_tokenizer

    device = torch.device(device)
    scheduler = DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False)
    if arch in ("tiny", "tiny-xl"):
        from ddim_edit.testing import tiny_pipeline, tiny_sdxl_pipeline

        pipe = tiny_pipeline() if arch == "tiny" else tiny_sdxl_pipeline()
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
        return pipe
    if arch not in ("sd15", "sdxl"):
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHES)}")
    vae_dtype = torch.float32 if dtype == torch.float16 else dtype
    tokenizer = build_tokenizer(list(WORDS))
    if arch == "sd15":
        unet = _build(lambda: UNet2DConditionModel(**SD15_UNET), device, dtype, 1)
        vae = _build(lambda: AutoencoderKL(**SD15_VAE), device, vae_dtype, 2)
        text_encoder = _build(lambda: CLIPTextModel(_clip_config(CLIP_L, tokenizer)), device, dtype, 3)
        return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    unet = _build(lambda: UNet2DConditionModel(**SDXL_UNET), device, dtype, 1)
    vae = _build(lambda: AutoencoderKL(**SDXL_VAE), device, vae_dtype, 2)
    text_encoder = _build(lambda: CLIPTextModel(_clip_config(CLIP_L, tokenizer)), device, dtype, 3)
    tokenizer_2 = build_tokenizer(list(WORDS))
    text_encoder_2 = _build(lambda: CLIPTextModelWithProjection(_clip_config(CLIP_BIG_G, tokenizer_2)), device, dtype, 4)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

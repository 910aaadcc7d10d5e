"""Real SD 1.5, SDXL base 1.0, SD3-medium and (reduced-depth) FLUX.1-dev architectures with random
weights, built in code (no hub).

The configs are those of the public repos (``stable-diffusion-v1-5/stable-diffusion-v1-5``,
``stabilityai/stable-diffusion-xl-base-1.0``, ``stabilityai/stable-diffusion-3-medium-diffusers``,
``black-forest-labs/FLUX.1-dev``: ``unet/`` or ``transformer/config.json``, ``vae/config.json``,
``text_encoder*/config.json``, ``scheduler/scheduler_config.json``), written out here. Weights are
random: modules are built on the ``meta`` device (no init cost) and each parameter is then
allocated on the target device and filled with N(0, 1/fan_in) (norm weights 1, biases 0), enough
to keep activations finite; outputs mean nothing, only cost is measured. The tokenizers are built
in memory over a small word list (:func:`ddim_edit.toy.components.build_tokenizer` for CLIP,
:func:`ddim_edit.testing._t5_tokenizer`'s Unigram one for T5); the text encoders keep CLIP's real
49 408-token and T5's 32 128-token embedding tables.

Two of the flow architectures are cut down to fit a CPU machine's memory in float32:

- ``sd3``: SD3-medium's transformer (2.03 B parameters), VAE and both CLIP encoders exactly, but
  **no T5-XXL** (4.8 B parameters, ~19 GB in float32): ``text_encoder_3=None``. SD3 runs without
  it: ``StableDiffusion3Pipeline`` then puts zeros where T5's states go, so the joint text
  sequence is still CLIP's 77 tokens + 256 (zero) T5 positions = 333, and the transformer's cost
  per call is the same as with T5; only the one-off prompt encoding is cheaper.
- ``flux``: FLUX.1-dev at full width (3072 = 24 heads × 128, T5 states 4096 wide, CLIP pooled 768)
  but **reduced depth**, fixed here: :data:`FLUX_DEPTH` (2 double-stream + 4 single-stream blocks
  of the real 19 + 38: 1.31 B of the transformer's 11.9 B parameters) and a T5 of T5-XXL's width
  with 2 of its 24 layers (:data:`T5_XXL`). Cost per transformer call scales with the number of
  blocks; the per-block cost, sequence (512 T5 tokens + the image tokens), packing, guidance
  embedding and VAE are FLUX.1-dev's.

``tiny`` / ``tiny-xl`` / ``tiny-sd3`` / ``tiny-flux`` are :mod:`ddim_edit.testing`'s tiny pipelines,
for the fast test (``tiny-sd3`` without T5, as ``sd3``).
"""

from __future__ import annotations

import math

import torch

ARCHES = ("sd15", "sdxl", "sd3", "flux", "tiny", "tiny-xl", "tiny-sd3", "tiny-flux")
FLOW_ARCHES = ("sd3", "flux", "tiny-sd3", "tiny-flux")
"""The rectified-flow architectures (transformer denoiser, flow-matching Euler scheduler)."""
ARCH_NOTES = {
    "sd3": "SD3-medium without T5-XXL (text_encoder_3=None: the pipeline puts zeros in T5's 256 positions, "
           "so the joint text sequence is still 77 CLIP + 256 tokens and the transformer's cost is unchanged)",
    "flux": "FLUX.1-dev at full width, reduced depth: 2 double-stream + 4 single-stream blocks (of 19 + 38), "
            "T5 4096 wide with 2 of T5-XXL's 24 layers",
    "tiny-sd3": "tiny SD3 layout without T5",
    "tiny-flux": "tiny FLUX.1-dev layout",
}
"""What an arch leaves out of the real model, as the report states it."""

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
# --- SD3-medium (stabilityai/stable-diffusion-3-medium-diffusers)
SD3_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
    joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
    pos_embed_max_size=192,
)
FLOW_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=1024, force_upcast=True,
    use_quant_conv=False, use_post_quant_conv=False,
)
SD3_VAE = dict(FLOW_VAE, scaling_factor=1.5305, shift_factor=0.0609)
SD3_SCHEDULE = dict(num_train_timesteps=1000, shift=3.0)
# --- FLUX.1-dev (black-forest-labs/FLUX.1-dev), transformer and T5 at reduced depth (module docstring)
FLUX_DEPTH = dict(num_layers=2, num_single_layers=4)
"""Double- and single-stream blocks of the ``flux`` arch (FLUX.1-dev has 19 and 38)."""
FLUX_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_attention_heads=24, attention_head_dim=128, joint_attention_dim=4096,
    pooled_projection_dim=768, axes_dims_rope=(16, 56, 56), guidance_embeds=True, **FLUX_DEPTH,
)
FLUX_VAE = dict(FLOW_VAE, scaling_factor=0.3611, shift_factor=0.1159)
FLUX_SCHEDULE = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                     base_image_seq_len=256, max_image_seq_len=4096)
T5_XXL = dict(
    vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=2, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6, dropout_rate=0.0, tie_word_embeddings=False,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)
"""T5 v1.1 XXL's encoder (FLUX.1-dev's ``text_encoder_2``) with 2 of its 24 layers."""

SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                steps_offset=1, timestep_spacing="leading")

WORDS = ("a photo of the cat dog red blue green yellow circle square triangle striped solid outlined on white "
         "black gray background sofa painting in style").split()


def _fill(module: torch.nn.Module, device: torch.device, dtype: torch.dtype, generator: torch.Generator) -> None:
    """Allocate every meta parameter on ``device`` in ``dtype`` and fill it (see the module docstring);
    a parameter that several modules share (T5's tied token embedding) is allocated once, and stays shared."""
    made: dict[int, torch.nn.Parameter] = {}
    for sub in module.modules():
        # GroupNorm / LayerNorm, and the RMS norms of the flow transformers and T5 (diffusers' RMSNorm,
        # T5LayerNorm): their weights are scales
        norm = isinstance(sub, (torch.nn.GroupNorm, torch.nn.LayerNorm)) or type(sub).__name__.endswith("Norm")
        for name, param in list(sub._parameters.items()):
            if param is None:
                continue
            if id(param) in made:
                sub._parameters[name] = made[id(param)]
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
            sub._parameters[name] = made[id(param)] = torch.nn.Parameter(tensor, requires_grad=False)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = buffer.to(device)


def _meta_module(factory) -> torch.nn.Module:
    """``factory()`` on the meta device, its tied weights tied (init_empty_weights unties them)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        module = factory()
    if hasattr(module, "tie_weights"):  # transformers models (T5: encoder.embed_tokens is shared); outside the
        module.tie_weights()            # context, whose register_parameter would make a new meta copy
    return module


def _build(factory, device: torch.device, dtype: torch.dtype, seed: int):
    module = _meta_module(factory)
    generator = torch.Generator("cpu").manual_seed(seed)
    if device.type != "cpu":
        torch.manual_seed(seed)
    _fill(module, device, dtype, generator)
    return module.eval()


def _clip_config(base: dict, tokenizer, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**base, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, **extra)


def component_factories(arch: str) -> dict:
    """What :func:`build_pipeline` builds for a real arch (``sd15``, ``sdxl``, ``sd3``, ``flux``):
    ``{"tokenizers": {name: tokenizer}, "modules": {name: (factory, seed)}}``, each factory making
    its module (call it under ``accelerate.init_empty_weights`` to get it on the meta device)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from ddim_edit.testing import _t5_tokenizer
    from ddim_edit.toy.components import build_tokenizer

    tokenizer = build_tokenizer(list(WORDS))
    if arch == "sd15":
        return {"tokenizers": {"tokenizer": tokenizer}, "modules": {
            "unet": (lambda: UNet2DConditionModel(**SD15_UNET), 1), "vae": (lambda: AutoencoderKL(**SD15_VAE), 2),
            "text_encoder": (lambda: CLIPTextModel(_clip_config(CLIP_L, tokenizer)), 3)}}
    tokenizer_2 = build_tokenizer(list(WORDS))
    if arch == "sdxl":
        return {"tokenizers": {"tokenizer": tokenizer, "tokenizer_2": tokenizer_2}, "modules": {
            "unet": (lambda: UNet2DConditionModel(**SDXL_UNET), 1), "vae": (lambda: AutoencoderKL(**SDXL_VAE), 2),
            "text_encoder": (lambda: CLIPTextModel(_clip_config(CLIP_L, tokenizer)), 3),
            "text_encoder_2": (lambda: CLIPTextModelWithProjection(_clip_config(CLIP_BIG_G, tokenizer_2)), 4)}}
    if arch == "sd3":
        return {"tokenizers": {"tokenizer": tokenizer, "tokenizer_2": tokenizer_2}, "modules": {
            "transformer": (lambda: SD3Transformer2DModel(**SD3_TRANSFORMER), 1),
            "vae": (lambda: AutoencoderKL(**SD3_VAE), 2),
            "text_encoder": (lambda: CLIPTextModelWithProjection(_clip_config(CLIP_L, tokenizer)), 3),
            "text_encoder_2": (lambda: CLIPTextModelWithProjection(_clip_config(CLIP_BIG_G, tokenizer_2)), 4)}}
    if arch == "flux":
        t5_tokenizer = _t5_tokenizer(list(WORDS))
        return {"tokenizers": {"tokenizer": tokenizer, "tokenizer_2": t5_tokenizer}, "modules": {
            "transformer": (lambda: FluxTransformer2DModel(**FLUX_TRANSFORMER), 1),
            "vae": (lambda: AutoencoderKL(**FLUX_VAE), 2),
            "text_encoder": (lambda: CLIPTextModel(_clip_config(CLIP_L, tokenizer)), 3),
            "text_encoder_2": (lambda: T5EncoderModel(T5Config(**T5_XXL)), 4)}}
    raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHES)}")


def meta_parameter_counts(arch: str) -> dict[str, int]:
    """Each component's parameter count for a real arch, built on the meta device (nothing allocated)."""
    return {name: parameter_count(_meta_module(factory))
            for name, (factory, _) in component_factories(arch)["modules"].items()}


def build_pipeline(arch: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The diffusers pipeline of ``arch`` (one of :data:`ARCHES`).

    Components are allocated on ``device`` (VAE in float32 when ``dtype`` is fp16, as
    :meth:`~ddim_edit.model.EditModel.from_pipeline` keeps it). SD 1.5 / SDXL get a ``DDIMScheduler``
    (``clip_sample=False``, ``set_alpha_to_one=False``) with SD's betas; SD3 and FLUX their repos'
    ``FlowMatchEulerDiscreteScheduler`` (SD3 ``shift=3.0``; FLUX.1-dev's dynamic shifting). ``sd3``
    has no T5 (``text_encoder_3=None``), ``flux`` is at reduced depth (see the module docstring).
    """
    from diffusers import (DDIMScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline,
                           StableDiffusionPipeline, StableDiffusionXLPipeline)

    device = torch.device(device)
    if arch in ("tiny", "tiny-xl"):
        from ddim_edit.testing import tiny_pipeline, tiny_sdxl_pipeline

        pipe = tiny_pipeline() if arch == "tiny" else tiny_sdxl_pipeline()
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
        return pipe
    if arch == "tiny-sd3":
        from ddim_edit.testing import tiny_sd3_pipeline

        return tiny_sd3_pipeline(with_t5=False)
    if arch == "tiny-flux":
        from ddim_edit.testing import tiny_flux_pipeline

        return tiny_flux_pipeline()
    if arch not in ARCHES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHES)}")
    vae_dtype = torch.float32 if dtype == torch.float16 else dtype
    parts = component_factories(arch)
    modules = {name: _build(factory, device, vae_dtype if name == "vae" else dtype, seed)
               for name, (factory, seed) in parts["modules"].items()}
    components = dict(parts["tokenizers"], **modules)
    if arch in FLOW_ARCHES:
        scheduler = FlowMatchEulerDiscreteScheduler(**(SD3_SCHEDULE if arch == "sd3" else FLUX_SCHEDULE))
    else:
        scheduler = DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False)
    if arch == "sd15":
        return StableDiffusionPipeline(**components, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    if arch == "sdxl":
        return StableDiffusionXLPipeline(**components, scheduler=scheduler, force_zeros_for_empty_prompt=True)
    if arch == "sd3":
        return StableDiffusion3Pipeline(**components, scheduler=scheduler, text_encoder_3=None, tokenizer_3=None)
    return FluxPipeline(**components, scheduler=scheduler)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

"""Tiny Stable-Diffusion-shaped pipelines built in code, for tests and offline smoke runs.

Real diffusers components (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer,
DDIMScheduler) with tiny configs and seeded random weights: the same code paths as real SD,
in milliseconds. :func:`tiny_sd3_pipeline` and :func:`tiny_flux_pipeline` do the same for the
flow-matching transformer families (SD3, FLUX), with CLIP and T5 tokenizers built in code.
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


def _flow_vae(sample_size: int, scaling_factor: float, shift_factor: float):
    """A tiny ``AutoencoderKL`` laid out like SD3's and FLUX's: four blocks (factor 8), four latent
    channels, no quant convs, and a ``shift_factor`` (latents are ``(z - shift) * scale``)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=8, sample_size=sample_size * 8, use_quant_conv=False,
        use_post_quant_conv=False, scaling_factor=scaling_factor, shift_factor=shift_factor,
    ).eval()


_SPACE = "\u2581"  # SentencePiece's word-start mark


def _t5_tokenizer(words: list[str] | None = None):
    """A T5 (SentencePiece-Unigram) tokenizer in which every word (default: :data:`WORDS`) is one piece.

    T5's layout: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``▁`` 3, then each word as ``▁word`` (after a
    space) and ``word`` (glued on), then single characters so other text still gets real ids; a
    ``Metaspace`` pre-tokenizer and ``</s>`` appended. No sentinel (``<extra_id_*>``) tokens. Saved
    as ``tokenizer.json`` it reloads as the same tokenizer.
    """
    import string

    from transformers import T5Tokenizer

    words = list(WORDS) if words is None else list(words)
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), (_SPACE, -2.0)]
    for word in dict.fromkeys(words):
        pieces += [(_SPACE + word, -1.0), (word, -1.5)]
    known = {piece for piece, _ in pieces}
    pieces += [(ch, -10.0) for ch in string.ascii_letters + string.digits + string.punctuation if ch not in known]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _t5_encoder(tokenizer):
    """A tiny T5 v1.1-shaped (gated-GELU, untied) ``T5EncoderModel``, 32 wide."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )).eval()


def tiny_sd3_pipeline(seed: int = 0, sample_size: int = 8, with_t5: bool = True):
    """A StableDiffusion3Pipeline with tiny random components and SD3's layout.

    Latents are 4×sample_size² (images 8× that: call with ``height=width=sample_size * 8``, a multiple
    of 16 since patches are 2×2, so ``sample_size`` must be even). Two CLIP encoders with projections
    (8 and 16 wide, so their concatenated hidden states, 24, are zero-padded to T5's 32 as SD3's 2048
    are to 4096; pooled 32 + 32 = 64), a T5 encoder (``with_t5=False``: none, and the pipeline uses
    zeros in its place), a flow-matching Euler scheduler with SD3's ``shift=3.0``, and a VAE with SD3's
    scaling and shift factors.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from .toy.components import build_tokenizer

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
        pooled_projection_dim=64,
    ).eval()
    vae = _flow_vae(sample_size, scaling_factor=1.5305, shift_factor=0.0609)
    tokenizer = build_tokenizer(list(WORDS))
    tokenizer_2 = build_tokenizer(list(WORDS))
    clip = dict(vocab_size=len(tokenizer), num_hidden_layers=2, max_position_embeddings=77, projection_dim=32,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
        **clip, hidden_size=8, intermediate_size=16, num_attention_heads=2, hidden_act="quick_gelu")).eval()
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
        **clip, hidden_size=16, intermediate_size=32, num_attention_heads=4, hidden_act="gelu")).eval()
    tokenizer_3 = _t5_tokenizer() if with_t5 else None
    text_encoder_3 = _t5_encoder(tokenizer_3) if with_t5 else None
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=vae,
                                    text_encoder=text_encoder, tokenizer=tokenizer,
                                    text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                                    text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)


def tiny_flux_pipeline(seed: int = 0, sample_size: int = 8):
    """A FluxPipeline with tiny random components and FLUX.1-dev's layout.

    Latents are 4×sample_size² (packed 2×2 into 16-channel tokens; images 8× that: call with
    ``height=width=sample_size * 8``, a multiple of 16, so ``sample_size`` must be even; the pipeline's
    default size is 1024, not the VAE's). A CLIP text encoder (pooled output 32), a T5 encoder (32),
    a guidance-distilled transformer (``guidance_embeds``), FLUX.1-dev's dynamically shifted
    flow-matching scheduler, and a VAE with FLUX's scaling and shift factors.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .toy.components import build_tokenizer

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 4, 8),
        guidance_embeds=True,
    ).eval()
    vae = _flow_vae(sample_size, scaling_factor=0.3611, shift_factor=0.1159)
    tokenizer = build_tokenizer(list(WORDS))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )).eval()
    tokenizer_2 = _t5_tokenizer()
    text_encoder_2 = _t5_encoder(tokenizer_2)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    return FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)


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


def tiny_flux2_klein_pipeline(seed: int = 0, sample_size: int = 8):
    """A Flux2KleinPipeline with tiny random components and FLUX.2 [klein]'s layout.

    VAE latents are 4×sample_size² (images 8× that: call with ``height=width=sample_size * 8``, a
    multiple of 16, so ``sample_size`` must be even; the pipeline's default size is 1024). The pipeline
    patchifies them 2×2 into 16 channels, normalises them with the VAE's batch-norm running statistics
    (seeded, non-trivial here, as the real VAE's are) and flattens them into (sample_size/2)² tokens.

    * ``Flux2Transformer2DModel``: 1 double-stream + 1 single-stream block, 2 heads of 16 (inner 32),
      RoPE axes (4, 4, 4, 4) over 4-D position ids, no guidance embedding (klein is not
      guidance-distilled: ``guidance_scale`` is real classifier-free guidance with a "" negative).
    * ``AutoencoderKLFlux2``: four blocks (factor 8), 4 latent channels, quant convs, ``bn`` over the
      16 patchified channels.
    * ``Qwen3ForCausalLM``: 32 wide but 28 layers, so that the pipeline's default
      ``text_encoder_out_layers=(9, 18, 27)`` exist (hidden_states has 29 entries; the real 4B has 37);
      prompt embeddings are those three layers stacked, 3 × 32 = 96 = ``joint_attention_dim``.
    * A ``Qwen2Tokenizer`` (byte-level BPE, Qwen's pre-tokenizer) built in code: the 256 byte symbols,
      merges learnt so that every word of :data:`WORDS` (bare and space-prefixed), ``user``,
      ``assistant`` and ``\\n\\n`` is one token, Qwen's special tokens (``<|endoftext|>`` pad,
      ``<|im_start|>``, ``<|im_end|>`` eos, ``<think>``, ``</think>``) and a minimal Qwen3 chat template
      giving ``<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n``
      with ``enable_thinking=False``, as the pipeline's ``encode_prompt`` renders it.
    * ``FlowMatchEulerDiscreteScheduler`` with the config the klein repos ship (FLUX.1-dev's: dynamic
      shifting; the pipeline passes its own ``mu``).
    * ``is_distilled=False`` (klein *base*; the step-distilled klein sets it True and ignores guidance).
    """
    from diffusers import (AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline,
                           Flux2Transformer2DModel)
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3ForCausalLM

    from .toy.components import learn_merges

    # byte-level alphabet in GPT-2/Qwen order (printable bytes first, then the rest shifted past 255)
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]
    vocab: dict[str, int] = {symbol: i for i, symbol in enumerate(alphabet)}
    space, newline = "\u0120", "\u010a"  # byte-level "Ġ" (space) and "Ċ" (\n)
    pieces = [p for w in dict.fromkeys([*WORDS, "user", "assistant"]) for p in (space + w, w)] + [newline * 2]
    segmented = {piece: list(piece) for piece in pieces}
    merges = learn_merges(segmented, vocab)  # each piece one token
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"], model_max_length=131072,
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    tokenizer.chat_template = (
        "{%- for message in messages %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
        "{%- if enable_thinking is defined and enable_thinking is false %}"
        "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
        "{%- endif %}"
    )

    torch.manual_seed(seed)
    hidden, out_layers = 32, (9, 18, 27)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=hidden * len(out_layers), timestep_guidance_channels=256,
        mlp_ratio=3.0, axes_dims_rope=(4, 4, 4, 4), rope_theta=2000, eps=1e-6, guidance_embeds=False,
    ).eval()
    vae = AutoencoderKLFlux2(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=sample_size * 8, batch_norm_eps=1e-4,
        patch_size=(2, 2),
    )
    with torch.no_grad():  # the real VAE's running statistics are trained, not 0 / 1
        vae.bn.running_mean.copy_(0.3 * torch.randn(vae.bn.num_features))
        vae.bn.running_var.copy_(torch.empty(vae.bn.num_features).uniform_(0.5, 2.0))
    vae.eval()
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, num_hidden_layers=max(out_layers) + 1,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
        rope_theta=1000000.0, tie_word_embeddings=True, pad_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|im_end|>"], bos_token_id=None,
    )).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096, time_shift_type="exponential",
    )
    return Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              transformer=transformer, is_distilled=False)

"""Convert a diffusers StableDiffusionPipeline into the original LDM (CompVis) single-file layout.

A test helper: it lets the tests write a *real* single-file checkpoint — the key layout of the
``.safetensors`` files people download (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.*``) — from the tiny pipeline, so that the single-file loading path
(``StableDiffusionPipeline.from_single_file``) can be exercised offline.

It does what diffusers' ``scripts/convert_diffusers_to_original_stable_diffusion.py`` does for
SD 1.x, but derives the block numbering from the models' configs instead of SD's fixed layout
(any number of down/up blocks, any ``layers_per_block``, attention present or not per block).
The keys produced are the ones the forward conversion in
``diffusers.loaders.single_file_utils`` (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``) reads back.

Supported: the SD 1.x family — ``UNet2DConditionModel`` with a cross-attention mid block and
no class/addition embeddings, ``AutoencoderKL`` (with its mid-block attention) and a
``CLIPTextModel`` text encoder. Anything else raises ``ValueError`` rather than writing a
file that would load wrongly.
"""

from __future__ import annotations

import json

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# diffusers name → LDM name, inside one residual block
UNET_RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
VAE_RESNET_NAMES = {"conv_shortcut": "nin_shortcut"}  # norm1/conv1/norm2/conv2 keep their names
VAE_ATTENTION_NAMES = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel state dict → LDM ``model.diffusion_model.*`` keys."""
    config = unet.config
    if getattr(config, "class_embed_type", None) or getattr(config, "addition_embed_type", None):
        raise ValueError("class / addition embeddings (SDXL, upscaler) are not supported by this helper")
    if type(unet.mid_block).__name__ != "UNetMidBlock2DCrossAttn":
        raise ValueError(f"mid block {type(unet.mid_block).__name__} is not supported (LDM SD 1.x has a cross-attention mid block)")
    layers = config.layers_per_block
    if not isinstance(layers, int):
        raise ValueError("per-block layers_per_block is not supported: the LDM numbering assumes one value")
    state = unet.state_dict()
    done: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    def put(diffusers_key: str, ldm_key: str) -> None:
        if ldm_key in out:
            raise ValueError(f"two weights map to {ldm_key}")
        out[ldm_key] = state[diffusers_key]
        done.add(diffusers_key)

    def move(diffusers_module: str, ldm_module: str, names: dict[str, str] | None = None) -> None:
        """Every parameter under ``diffusers_module`` → ``ldm_module`` (sub-names renamed by names)."""
        found = False
        for key in state:
            if key.startswith(diffusers_module + "."):
                rest = key[len(diffusers_module) + 1:]
                for old, new in (names or {}).items():
                    if rest.startswith(old + "."):
                        rest = new + rest[len(old):]
                        break
                put(key, f"{ldm_module}.{rest}")
                found = True
        if not found:
            raise ValueError(f"no weights under {diffusers_module}")

    for diffusers_module, ldm_module in UNET_TOP_LEVEL.items():
        move(diffusers_module, ldm_module)

    # Down path: input_blocks.0 is conv_in; then per down block, `layers` (resnet[, attention])
    # pairs followed by one downsampler slot (present for every block but the last).
    slot = 1
    for i, block in enumerate(unet.down_blocks):
        has_attention = getattr(block, "attentions", None) is not None and len(block.attentions) > 0
        for j in range(layers):
            move(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{slot}.0", UNET_RESNET_NAMES)
            if has_attention:
                move(f"down_blocks.{i}.attentions.{j}", f"input_blocks.{slot}.1")
            slot += 1
        if getattr(block, "downsamplers", None) is not None:
            move(f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{slot}.0.op")
            slot += 1

    move("mid_block.resnets.0", "middle_block.0", UNET_RESNET_NAMES)
    move("mid_block.attentions.0", "middle_block.1")
    move("mid_block.resnets.1", "middle_block.2", UNET_RESNET_NAMES)

    # Up path: per up block, layers + 1 (resnet[, attention]) slots; the last slot of every block
    # but the last one also holds the upsampler, after the resnet (and attention when present).
    slot = 0
    for i, block in enumerate(unet.up_blocks):
        has_attention = getattr(block, "attentions", None) is not None and len(block.attentions) > 0
        for j in range(layers + 1):
            move(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{slot}.0", UNET_RESNET_NAMES)
            if has_attention:
                move(f"up_blocks.{i}.attentions.{j}", f"output_blocks.{slot}.1")
            if j == layers and getattr(block, "upsamplers", None) is not None:
                move(f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{slot}.{2 if has_attention else 1}.conv")
            slot += 1

    left = sorted(set(state) - done)
    if left:
        raise ValueError(f"UNet weights with no LDM name: {left[:5]}")
    return {UNET_PREFIX + k: v for k, v in out.items()}


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    """AutoencoderKL state dict → LDM ``first_stage_model.*`` keys.

    LDM's VAE attention is made of 1×1 convolutions: q/k/v/proj_out weights are [C, C, 1, 1].
    """
    state = vae.state_dict()
    done: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    def move(diffusers_module: str, ldm_module: str, names: dict[str, str] | None = None,
             conv_weights: bool = False) -> None:
        found = False
        for key, value in state.items():
            if not key.startswith(diffusers_module + "."):
                continue
            rest = key[len(diffusers_module) + 1:]
            for old, new in (names or {}).items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old):]
                    break
            if conv_weights and rest.endswith(".weight") and not rest.startswith("norm.") and value.ndim == 2:
                value = value[:, :, None, None]
            ldm_key = f"{ldm_module}.{rest}"
            if ldm_key in out:
                raise ValueError(f"two weights map to {ldm_key}")
            out[ldm_key] = value
            done.add(key)
            found = True
        if not found:
            raise ValueError(f"no weights under {diffusers_module}")

    for part in ("encoder", "decoder"):
        move(f"{part}.conv_in", f"{part}.conv_in")
        move(f"{part}.conv_out", f"{part}.conv_out")
        move(f"{part}.conv_norm_out", f"{part}.norm_out")
        move(f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", VAE_RESNET_NAMES)
        move(f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", VAE_RESNET_NAMES)
        move(f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", VAE_ATTENTION_NAMES, conv_weights=True)

    for i, block in enumerate(vae.encoder.down_blocks):
        for j in range(len(block.resnets)):
            move(f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", VAE_RESNET_NAMES)
        if getattr(block, "downsamplers", None) is not None:
            move(f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv")

    # The decoder's up blocks are numbered from the lowest resolution in diffusers, from the
    # highest in LDM: diffusers up_blocks.i is LDM up.(n-1-i).
    n = len(vae.decoder.up_blocks)
    for i, block in enumerate(vae.decoder.up_blocks):
        ldm_i = n - 1 - i
        for j in range(len(block.resnets)):
            move(f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{ldm_i}.block.{j}", VAE_RESNET_NAMES)
        if getattr(block, "upsamplers", None) is not None:
            move(f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{ldm_i}.upsample.conv")

    for name in ("quant_conv", "post_quant_conv"):
        if any(k.startswith(name + ".") for k in state):
            move(name, name)

    left = sorted(set(state) - done)
    if left:
        raise ValueError(f"VAE weights with no LDM name: {left[:5]}")
    return {VAE_PREFIX + k: v for k, v in out.items()}


def text_encoder_to_ldm(text_encoder) -> dict[str, torch.Tensor]:
    """CLIPTextModel state dict → ``cond_stage_model.transformer.text_model.*`` keys.

    SD 1.x stores the whole transformers CLIPTextModel under ``cond_stage_model.transformer``,
    so the names are the transformers ones with the ``text_model.`` level that CLIPTextModel had
    before transformers 5.6 flattened it (diffusers strips it again when loading into a flat model).
    """
    if type(text_encoder).__name__ != "CLIPTextModel":
        raise ValueError(f"{type(text_encoder).__name__} is not supported: SD 1.x single files hold a CLIPTextModel")
    out = {}
    for key, value in text_encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue  # a buffer, not a weight; diffusers rebuilds it
        if not key.startswith("text_model."):
            key = "text_model." + key
        out[CLIP_PREFIX + key] = value
    return out


def to_ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """A StableDiffusionPipeline's UNet, VAE and text encoder in the original LDM single-file layout.

    Tensors are contiguous CPU copies, ready for ``safetensors.torch.save_file``.
    """
    state: dict[str, torch.Tensor] = {}
    for part in (unet_to_ldm(pipe.unet), vae_to_ldm(pipe.vae), text_encoder_to_ldm(pipe.text_encoder)):
        overlap = set(state) & set(part)
        if overlap:
            raise ValueError(f"duplicate keys: {sorted(overlap)[:5]}")
        state.update(part)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def plain_config(config: dict) -> dict:
    """A model config without private entries, tuples as lists (JSON round trips make lists)."""
    return json.loads(json.dumps({k: v for k, v in dict(config).items() if not k.startswith("_")}, default=str))

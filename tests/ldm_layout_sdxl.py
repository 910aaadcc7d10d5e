"""Convert a diffusers StableDiffusionXLPipeline into the original SGM (Stability) SDXL single-file layout.

A test helper, the SDXL counterpart of ``ldm_layout.py``: it writes the key layout of the SDXL
``.safetensors`` files people download, so that ``StableDiffusionXLPipeline.from_single_file``
(diffusers' SGM → diffusers conversion) can be exercised offline on a tiny model:

- UNet under ``model.diffusion_model.*`` — the same ``input_blocks`` / ``middle_block`` /
  ``output_blocks`` numbering as SD 1.x (derived from the config by ``ldm_layout.unet_to_ldm``),
  plus the ``text_time`` addition embedding as ``label_emb.0.0`` / ``label_emb.0.2``;
- VAE under ``first_stage_model.*`` (``ldm_layout.vae_to_ldm``);
- text encoder 1 (``CLIPTextModel``, transformers layout) under
  ``conditioner.embedders.0.transformer.text_model.*``;
- text encoder 2 (``CLIPTextModelWithProjection``) in open_clip layout under
  ``conditioner.embedders.1.model.*``: ``token_embedding.weight``, ``positional_embedding``,
  ``transformer.resblocks.N.{attn.in_proj_weight/bias (q, k, v concatenated), attn.out_proj,
  ln_1, ln_2, mlp.c_fc, mlp.c_proj}``, ``ln_final`` and ``text_projection`` ([width, projection],
  the transpose of the transformers linear weight).

These are the keys ``diffusers.loaders.single_file_utils`` reads back
(``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``,
``convert_open_clip_checkpoint``), and ``conditioner.embedders.1.`` is what
``ddim_edit.families.checkpoint_family`` recognises as SDXL.

What diffusers cannot tell apart, this helper refuses (``ValueError``) rather than writing a file
that would load wrongly: ``from_single_file`` decides which of the two text-encoder conversions to
run for *each* CLIP class by comparing the width of
``conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight`` with the
model's own width, so two text encoders of the same width (real SDXL: 768 and 1280) make it load
text encoder 1's weights into text encoder 2. The per-component functions have no such limit.

diffusers' ``infer_diffusers_model_type`` only says ``xl_base`` when the file has
``…resblocks.9.mlp.c_proj.bias`` (real SDXL's 32-layer OpenCLIP-G); a tiny model has fewer
layers, which does not matter when ``from_single_file`` is given a ``config`` folder (that is
where the component configs come from), the only way ``ddim_edit`` loads offline.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ldm_layout import text_encoder_to_ldm, unet_to_ldm, vae_to_ldm

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "conditioner.embedders.0.transformer."
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
SD_CLIP_PREFIX = "cond_stage_model.transformer."  # what ldm_layout.text_encoder_to_ldm writes

# diffusers add_embedding (TimestepEmbedding) → SGM label_emb (Sequential(Linear, SiLU, Linear) in a Sequential)
ADD_EMBEDDING_NAMES = {"add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}

# inside one transformers CLIPEncoderLayer → open_clip ResidualAttentionBlock (q/k/v handled apart)
OPEN_CLIP_LAYER_NAMES = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


class _UNetBlocksView:
    """The UNet as ``ldm_layout.unet_to_ldm`` sees it: the config without the addition embedding and
    the state dict without its weights (mapped here), everything else the UNet's own."""

    def __init__(self, unet):
        self._unet = unet
        self.config = SimpleNamespace(**{**dict(unet.config), "addition_embed_type": None})

    def state_dict(self):
        return {k: v for k, v in self._unet.state_dict().items() if not k.startswith("add_embedding.")}

    def __getattr__(self, name):
        return getattr(self._unet, name)


def unet_to_sgm(unet) -> dict[str, torch.Tensor]:
    """SDXL UNet2DConditionModel state dict → SGM ``model.diffusion_model.*`` keys."""
    config = unet.config
    if getattr(config, "addition_embed_type", None) != "text_time":
        raise ValueError(f"addition_embed_type {getattr(config, 'addition_embed_type', None)!r} is not supported: "
                         "an SDXL UNet has the 'text_time' addition embedding")
    if getattr(config, "class_embed_type", None) or getattr(config, "num_class_embeds", None):
        raise ValueError("class embeddings are not supported: SDXL base has none")
    if getattr(config, "encoder_hid_dim", None) or getattr(config, "time_cond_proj_dim", None):
        raise ValueError("encoder_hid_dim / time_cond_proj_dim are not supported: SDXL base has neither")
    state = unet.state_dict()
    extra = sorted(k for k in state if k.startswith("add_embedding.") and k.rsplit(".", 1)[0] not in ADD_EMBEDDING_NAMES)
    if extra:
        raise ValueError(f"add_embedding weights with no SGM name: {extra[:5]}")
    out = unet_to_ldm(_UNetBlocksView(unet))  # input/middle/output blocks, time_embed, out; raises on the rest
    for diffusers_module, sgm_module in ADD_EMBEDDING_NAMES.items():
        for name in ("weight", "bias"):
            key = f"{diffusers_module}.{name}"
            if key not in state:
                raise ValueError(f"the UNet has no {key}")
            out[f"{UNET_PREFIX}{sgm_module}.{name}"] = state[key]
    return out


def clip_to_sgm(text_encoder) -> dict[str, torch.Tensor]:
    """Text encoder 1 (CLIPTextModel) → ``conditioner.embedders.0.transformer.text_model.*`` keys."""
    return {CLIP_PREFIX + k[len(SD_CLIP_PREFIX):]: v for k, v in text_encoder_to_ldm(text_encoder).items()}


def open_clip_to_sgm(text_encoder_2) -> dict[str, torch.Tensor]:
    """Text encoder 2 (CLIPTextModelWithProjection) → open_clip ``conditioner.embedders.1.model.*`` keys."""
    if type(text_encoder_2).__name__ != "CLIPTextModelWithProjection":
        raise ValueError(f"{type(text_encoder_2).__name__} is not supported: SDXL's second text encoder is a "
                         "CLIPTextModelWithProjection")
    state = {k: v for k, v in text_encoder_2.state_dict().items() if not k.endswith("position_ids")}
    if "text_projection.weight" not in state:
        raise ValueError("the second text encoder has no text_projection.weight")
    if "text_projection.bias" in state:
        raise ValueError("a text projection with a bias is not supported: open_clip's text_projection is a plain matrix")
    # CLIPTextModelWithProjection keeps the text_model level (CLIPTextModel lost it in transformers 5.6)
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    layers = int(text_encoder_2.config.num_hidden_layers)
    done: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    def put(key: str, sgm_key: str, value: torch.Tensor | None = None) -> None:
        if key not in state:
            raise ValueError(f"the second text encoder has no {key}")
        if sgm_key in out:
            raise ValueError(f"two weights map to {sgm_key}")
        out[sgm_key] = state[key] if value is None else value
        done.add(key)

    put("embeddings.token_embedding.weight", "token_embedding.weight")
    put("embeddings.position_embedding.weight", "positional_embedding")
    put("final_layer_norm.weight", "ln_final.weight")
    put("final_layer_norm.bias", "ln_final.bias")
    put("text_projection.weight", "text_projection", state["text_projection.weight"].T)
    for n in range(layers):
        ours, theirs = f"encoder.layers.{n}.", f"transformer.resblocks.{n}."
        for name in ("weight", "bias"):
            qkv = [f"{ours}self_attn.{p}_proj.{name}" for p in ("q", "k", "v")]
            missing = [key for key in qkv if key not in state]
            if missing:
                raise ValueError(f"the second text encoder has no {missing[0]}")
            out[f"{theirs}attn.in_proj_{name}"] = torch.cat([state[key] for key in qkv])
            done.update(qkv)
            for diffusers_name, open_clip_name in OPEN_CLIP_LAYER_NAMES.items():
                put(f"{ours}{diffusers_name}.{name}", f"{theirs}{open_clip_name}.{name}")
    left = sorted(set(state) - done)
    if left:
        raise ValueError(f"second text encoder weights with no open_clip name: {left[:5]}")
    return {OPEN_CLIP_PREFIX + k: v for k, v in out.items()}


def text_encoder_widths(pipe) -> tuple[int, int]:
    return int(pipe.text_encoder.config.hidden_size), int(pipe.text_encoder_2.config.hidden_size)


def to_sgm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """A StableDiffusionXLPipeline's UNet, VAE and both text encoders in the SGM SDXL single-file layout.

    Tensors are contiguous CPU copies, ready for ``safetensors.torch.save_file``.

    Raises:
        ValueError: for anything but an SDXL base pipeline (no first text encoder: a refiner; other
            UNets), and for text encoders of equal width, which ``from_single_file`` mixes up
            (see the module docstring).
    """
    if getattr(pipe, "text_encoder", None) is None or getattr(pipe, "text_encoder_2", None) is None:
        raise ValueError("an SDXL base pipeline with two text encoders is needed (the refiner has one)")
    widths = text_encoder_widths(pipe)
    if widths[0] == widths[1]:
        raise ValueError(f"both text encoders are {widths[0]} wide: diffusers' from_single_file would load text "
                         "encoder 1's weights into text encoder 2 (it tells them apart by width); give them "
                         "different hidden sizes (real SDXL: 768 and 1280)")
    state: dict[str, torch.Tensor] = {}
    for part in (unet_to_sgm(pipe.unet), vae_to_ldm(pipe.vae), clip_to_sgm(pipe.text_encoder),
                 open_clip_to_sgm(pipe.text_encoder_2)):
        overlap = set(state) & set(part)
        if overlap:
            raise ValueError(f"duplicate keys: {sorted(overlap)[:5]}")
        state.update(part)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}

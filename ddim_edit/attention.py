"""Attention processors installed by layer name, the hook point of every attention-based edit.

diffusers routes each attention layer through a processor object (``unet.attn_processors`` maps
``down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor`` → processor). Edits install
their own processors by those names with :func:`installed_processors` and restore the originals
afterwards; no ``forward`` is patched and no module is found by class name.

:class:`EditAttnProcessor` reproduces diffusers' ``AttnProcessor2_0`` and hands the projected
query, key and value ([batch, heads, tokens, head_dim]) to :meth:`EditAttnProcessor.attend`, the
one method an edit overrides.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LayerInfo:
    """What a processor name says about its layer."""

    name: str
    is_cross: bool  # attn2 (text keys/values) vs attn1 (self-attention)
    place: str  # "down", "mid" or "up"
    block: int  # index of the down/up block (0 for mid)


def layer_info(name: str) -> LayerInfo:
    """Parse ``up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor``."""
    parts = name.split(".")
    place = parts[0].split("_")[0]
    block = int(parts[1]) if place in ("down", "up") else 0
    return LayerInfo(name, ".attn2." in f".{name}.", place, block)


def attention_layers(unet, cross: bool | None = None, places: tuple[str, ...] = ("down", "mid", "up")) -> list[LayerInfo]:
    """The UNet's attention layers (self and/or cross, in the given places), in UNet order."""
    layers = [layer_info(name) for name in unet.attn_processors]
    return [layer for layer in layers if (cross is None or layer.is_cross == cross) and layer.place in places]


@contextlib.contextmanager
def installed_processors(unet, processors: dict[str, object]) -> Iterator[None]:
    """Install ``processors`` (name → processor) for the duration of the block, then restore."""
    original = dict(unet.attn_processors)
    unknown = sorted(set(processors) - set(original))
    if unknown:
        raise KeyError(f"no attention layer named {unknown[0]!r} in this UNet")
    unet.set_attn_processor({**original, **processors})
    try:
        yield
    finally:
        unet.set_attn_processor(original)


def attention_probabilities(query: torch.Tensor, key: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale) materialised, [batch, heads, q_tokens, k_tokens] (for stored maps)."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return (query @ key.transpose(-1, -2) * scale).softmax(dim=-1)


class EditAttnProcessor:
    """``AttnProcessor2_0`` with the attention step factored out into :meth:`attend`.

    Subclasses get ``layer`` (a :class:`LayerInfo`) and override :meth:`attend`.
    """

    def __init__(self, layer: LayerInfo):
        self.layer = layer

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn,
               attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Attention over [batch, heads, tokens, head_dim] tensors; default: plain SDPA."""
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = self.attend(query, key, value, attn, attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def processors_for(unet, make: Callable[[LayerInfo], object | None], cross: bool | None = None,
                   places: tuple[str, ...] = ("down", "mid", "up")) -> dict[str, object]:
    """Build name → processor for the chosen layers; ``make`` may return None to skip a layer."""
    chosen = {}
    for layer in attention_layers(unet, cross, places):
        processor = make(layer)
        if processor is not None:
            chosen[layer.name] = processor
    return chosen

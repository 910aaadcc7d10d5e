"""Attention sites by role, and processors installed on them: the hook point of every attention edit.

diffusers routes each attention layer through a processor object (``unet.attn_processors`` maps
``down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor`` → processor). Each layer is an
:class:`AttentionSite` tagged by what it does — its role (self, cross, joint), its stage and its
resolution level — so edits choose sites by role and never parse a layer's name
(:func:`attention_sites`). Edits install their own processors on the chosen sites with
:func:`installed_processors` and restore the originals afterwards; no ``forward`` is patched and no
module is found by class name.

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


ROLES = ("self", "cross", "joint")
STAGES = ("encoder", "middle", "decoder")


@dataclass(frozen=True)
class AttentionSite:
    """One attention layer of a denoiser, by what it does.

    Attributes:
        name: the processor's name, the key :func:`installed_processors` installs by.
        role: ``self`` (image tokens attend to image tokens), ``cross`` (image tokens attend to the
            text's keys and values) or ``joint`` (text and image tokens in one attention).
        stage: ``encoder``, ``middle`` or ``decoder`` (a UNet's down, mid and up blocks).
        level: the resolution level: 0 at the latent's own resolution, 1 at half of it, …
        layout: the kind of processor the layer runs, which fixes how it lays out its tokens: ``unet``
            (a UNet's attention), or a joint attention's ``sd3``, ``flux``, ``flux2`` or
            ``flux2-single`` (:mod:`ddim_edit.joint_attention`).
        text_tokens: how many text tokens lead a single-stream block's sequence (None elsewhere: the
            text comes as its own input).
    """

    name: str
    role: str
    stage: str
    level: int
    layout: str = "unet"
    text_tokens: int | None = None


_UNET_STAGES = {"down_blocks": "encoder", "mid_block": "middle", "up_blocks": "decoder"}


def unet_site(name: str, levels: int) -> AttentionSite:
    """The site of UNet processor ``name`` (``up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor``)
    in a UNet of ``levels`` resolution levels."""
    parts = name.split(".")
    stage = _UNET_STAGES[parts[0]]
    block = int(parts[1]) if stage != "middle" else levels - 1
    level = {"encoder": block, "middle": levels - 1, "decoder": levels - 1 - block}[stage]
    return AttentionSite(name, "cross" if ".attn2." in f".{name}." else "self", stage, level)


def attention_sites(unet, roles: tuple[str, ...] = ROLES, stages: tuple[str, ...] = STAGES) -> list[AttentionSite]:
    """The denoiser's attention sites with one of ``roles`` in one of ``stages``, in the model's order."""
    levels = len(unet.config.block_out_channels)
    sites = [unet_site(name, levels) for name in unet.attn_processors]
    return [site for site in sites if site.role in roles and site.stage in stages]


@contextlib.contextmanager
def installed_processors(unet, processors: dict[str, object]) -> Iterator[None]:
    """Install ``processors`` (name → processor) for the duration of the block, then restore."""
    original = dict(unet.attn_processors)
    unknown = sorted(set(processors) - set(original))
    if unknown:
        raise KeyError(f"no attention layer named {unknown[0]!r} in this denoiser")
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

    Subclasses get ``site`` (an :class:`AttentionSite`) and override :meth:`attend`.
    """

    def __init__(self, site: AttentionSite):
        self.site = site

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


def processors_for(sites: list[AttentionSite], make: Callable[[AttentionSite], object | None]) -> dict[str, object]:
    """Build name → processor for ``sites``; ``make`` may return None to skip a site."""
    chosen = {}
    for site in sites:
        processor = make(site)
        if processor is not None:
            chosen[site.name] = processor
    return chosen

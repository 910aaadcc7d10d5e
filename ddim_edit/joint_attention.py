"""Joint attention (text and image tokens in one attention, SD3's MMDiT and FLUX's blocks) with the
attention step factored out, as :class:`~ddim_edit.attention.EditAttnProcessor` does for UNets.

:class:`JointEditProcessor` reproduces diffusers' processors of each kind of joint attention — SD3's
``JointAttnProcessor2_0`` (image tokens, then text tokens), FLUX.1's ``FluxAttnProcessor`` and
FLUX.2's ``Flux2AttnProcessor`` (text tokens first, rotary embeddings), FLUX.2's
``Flux2ParallelSelfAttnProcessor`` (single-stream: text and image already in one sequence, one fused
projection for q, k, v and the MLP) — and hands the projected query, key and value ([batch, heads,
tokens, head_dim]) and where the text and image tokens sit (:class:`JointTokens`) to
:meth:`JointEditProcessor.attend`, the one method an edit overrides. The attention matrix's
image → text block is what cross-attention is in a UNet; its image → image block is self-attention.
FLUX.1's single-stream blocks run ``FluxAttnProcessor`` without a text input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import AttentionSite

SD3, FLUX, FLUX2, FLUX2_SINGLE = "sd3", "flux", "flux2", "flux2-single"
"""Processor kinds (``AttentionSite.layout``): SD3 puts the image tokens first, the others the text."""


@dataclass(frozen=True)
class JointTokens:
    """Where the text and the image tokens sit along the joint sequence."""

    text: slice
    image: slice

    @classmethod
    def of(cls, kind: str, text: int, total: int) -> "JointTokens":
        """The slices of a sequence of ``total`` tokens, ``text`` of them text, as processor ``kind`` orders them."""
        if kind == SD3:
            return cls(slice(total - text, total), slice(0, total - text))
        return cls(slice(0, text), slice(text, total))


class JointEditProcessor:
    """A joint-attention processor whose attention step is :meth:`attend` (see the module docstring)."""

    def __init__(self, site: AttentionSite):
        self.site = site

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn,
               tokens: JointTokens) -> torch.Tensor:
        """Attention over [batch, heads, tokens, head_dim] tensors; default: plain SDPA."""
        return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)

    def __call__(self, attn, hidden_states, *args, **kwargs):
        kind = self.site.layout
        if kind == FLUX2_SINGLE:  # called as (attn, hidden_states, attention_mask, image_rotary_emb)
            rotary = args[1] if len(args) > 1 else kwargs.get("image_rotary_emb")
            return self._flux2_single(attn, hidden_states, rotary)
        encoder_hidden_states = args[0] if args else kwargs.get("encoder_hidden_states")
        if kind == SD3:
            return self._sd3(attn, hidden_states, encoder_hidden_states)
        rotary = args[2] if len(args) > 2 else kwargs.get("image_rotary_emb")
        return self._flux(attn, hidden_states, encoder_hidden_states, rotary)

    def _sd3(self, attn, hidden_states, encoder_hidden_states):
        """``JointAttnProcessor2_0`` (image tokens, then text tokens)."""
        batch, image_tokens = hidden_states.shape[:2]

        def heads(states: torch.Tensor, head_dim: int) -> torch.Tensor:
            return states.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = heads(query, head_dim), heads(key, head_dim), heads(value, head_dim)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if encoder_hidden_states is not None:
            text_query = heads(attn.add_q_proj(encoder_hidden_states), head_dim)
            text_key = heads(attn.add_k_proj(encoder_hidden_states), head_dim)
            text_value = heads(attn.add_v_proj(encoder_hidden_states), head_dim)
            if attn.norm_added_q is not None:
                text_query = attn.norm_added_q(text_query)
            if attn.norm_added_k is not None:
                text_key = attn.norm_added_k(text_key)
            query, key = torch.cat([query, text_query], dim=2), torch.cat([key, text_key], dim=2)
            value = torch.cat([value, text_value], dim=2)
        text = 0 if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        out = self.attend(query, key, value, attn, JointTokens.of(SD3, text, query.shape[2]))
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        if encoder_hidden_states is not None:
            out, encoder_hidden_states = out[:, :image_tokens], out[:, image_tokens:]
            if not attn.context_pre_only:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        out = attn.to_out[1](attn.to_out[0](out))
        return out if encoder_hidden_states is None else (out, encoder_hidden_states)

    def _flux(self, attn, hidden_states, encoder_hidden_states, rotary):
        """``FluxAttnProcessor`` / ``Flux2AttnProcessor`` (text tokens first; a FLUX.1 single-stream
        block's text is its first ``site.text_tokens`` tokens)."""
        from diffusers.models.embeddings import apply_rotary_emb

        if self.site.layout == FLUX2:
            from diffusers.models.transformers.transformer_flux2 import _get_qkv_projections
        else:
            from diffusers.models.transformers.transformer_flux import _get_qkv_projections
        query, key, value, text_query, text_key, text_value = _get_qkv_projections(attn, hidden_states,
                                                                                   encoder_hidden_states)
        query, key = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim))), attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if attn.added_kv_proj_dim is not None and encoder_hidden_states is not None:
            text_query = attn.norm_added_q(text_query.unflatten(-1, (-1, attn.head_dim)))
            text_key = attn.norm_added_k(text_key.unflatten(-1, (-1, attn.head_dim)))
            query, key = torch.cat([text_query, query], dim=1), torch.cat([text_key, key], dim=1)
            value = torch.cat([text_value.unflatten(-1, (-1, attn.head_dim)), value], dim=1)
        if rotary is not None:
            query = apply_rotary_emb(query, rotary, sequence_dim=1)
            key = apply_rotary_emb(key, rotary, sequence_dim=1)
        text = encoder_hidden_states.shape[1] if encoder_hidden_states is not None else self.site.text_tokens
        tokens = JointTokens.of(self.site.layout, text, query.shape[1])
        out = self.attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn, tokens)
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out
        encoder_hidden_states, out = out.split_with_sizes([text, out.shape[1] - text], dim=1)
        out = attn.to_out[1](attn.to_out[0](out.contiguous()))
        return out, attn.to_add_out(encoder_hidden_states.contiguous())

    def _flux2_single(self, attn, hidden_states, rotary):
        """``Flux2ParallelSelfAttnProcessor``: one fused projection to q, k, v and the MLP's input; the
        block's text is its first ``site.text_tokens`` tokens."""
        from diffusers.models.embeddings import apply_rotary_emb

        projected = attn.to_qkv_mlp_proj(hidden_states)
        qkv, mlp = projected.split([3 * attn.inner_dim, projected.shape[-1] - 3 * attn.inner_dim], dim=-1)
        query, key, value = (part.unflatten(-1, (-1, attn.head_dim)) for part in qkv.chunk(3, dim=-1))
        query, key = attn.norm_q(query), attn.norm_k(key)
        if rotary is not None:
            query = apply_rotary_emb(query, rotary, sequence_dim=1)
            key = apply_rotary_emb(key, rotary, sequence_dim=1)
        tokens = JointTokens.of(FLUX2_SINGLE, self.site.text_tokens, query.shape[1])
        out = self.attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn, tokens)
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)
        return attn.to_out(torch.cat([out, attn.mlp_act_fn(mlp)], dim=-1))

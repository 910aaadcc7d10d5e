"""The tiny FLUX.2 [klein] pipeline in ddim_edit.testing: it runs, its in-code Qwen tokenizer gives real
ids through the pipeline's chat template, it survives save_pretrained/from_pretrained offline, and a
hand-written sampling loop (and hand-written attention processors) reproduce the pipeline exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ddim_edit.testing import WORDS, tiny_flux2_klein_pipeline

PROMPT = "a red circle on white background"
SAMPLE_SIZE = 8
SIZE = SAMPLE_SIZE * 8  # pixels: VAE factor 8; latents are then patchified 2×2
OUT_LAYERS = (9, 18, 27)  # the pipeline's default text_encoder_out_layers


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_flux2_klein_pipeline(sample_size=SAMPLE_SIZE)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, prompt=PROMPT, seed=0, **kwargs) -> torch.Tensor:
    # `prompt` must be a keyword: the first positional parameter of Flux2KleinPipeline.__call__ is `image`
    return pipe(prompt=prompt, height=SIZE, width=SIZE, num_inference_steps=2, output_type="latent",
                generator=torch.Generator().manual_seed(seed), **kwargs).images


def templated(tok, prompt: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=False)


# --------------------------------------------------------------------------------------------------
# a hand-written Flux2KleinPipeline.__call__ (text-to-image, no reference images)
# --------------------------------------------------------------------------------------------------


def empirical_mu(image_seq_len: int, num_steps: int) -> float:
    """diffusers.pipelines.flux2.pipeline_flux2_klein.compute_empirical_mu, rewritten."""
    a1, b1, a2, b2 = 8.73809524e-05, 1.89833333, 0.00016927, 0.45666666
    if image_seq_len > 4300:
        return a2 * image_seq_len + b2
    m_200, m_10 = a2 * image_seq_len + b2, a1 * image_seq_len + b1
    a = (m_200 - m_10) / 190.0
    return a * num_steps + (m_200 - 200.0 * a)


@torch.no_grad()
def hand_loop(pipe, prompt: str, *, height: int, width: int, steps: int, guidance_scale: float, seed: int,
              max_sequence_length: int = 512) -> torch.Tensor:
    tok, te, tr, vae = pipe.tokenizer, pipe.text_encoder, pipe.transformer, pipe.vae

    # 1. text: Qwen3 chat template, padded to max_sequence_length, hidden states 9, 18, 27 concatenated on
    #    the feature axis (stack(dim=1).permute(0, 2, 1, 3).reshape == cat(dim=-1)); pads are kept
    def encode(text: str):
        enc = tok(templated(tok, text), return_tensors="pt", padding="max_length", truncation=True,
                  max_length=max_sequence_length)
        hidden = te(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True,
                    use_cache=False).hidden_states
        embeds = torch.cat([hidden[k] for k in OUT_LAYERS], dim=-1)  # (1, L, 3 * hidden)
        n = embeds.shape[1]
        txt_ids = torch.zeros(1, n, 4, dtype=torch.long)  # (t, h, w, l) = (0, 0, 0, i)
        txt_ids[..., 3] = torch.arange(n)
        return embeds, txt_ids

    embeds, txt_ids = encode(prompt)
    cfg = guidance_scale > 1 and not pipe.config.is_distilled
    if cfg:
        neg_embeds, neg_txt_ids = encode("")

    # 2. noise directly in the patchified, normalised space: (1, 4 * latent_channels, H/16, W/16), then
    #    raster-order tokens (1, h * w, C) with ids (t, h, w, l) = (0, row, col, 0)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    h, w = height // (factor * 2), width // (factor * 2)
    channels = tr.config.in_channels
    noise = torch.randn((1, channels, h, w), generator=torch.Generator().manual_seed(seed))
    x = noise.flatten(2).transpose(1, 2)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols, torch.zeros_like(rows)], -1).reshape(1, h * w, 4)

    # 3. sigmas: linspace(1, 1/N, N), exponential time shift with mu from the image token count, then 0
    mu = empirical_mu(h * w, steps)
    base = [1.0 - i * (1.0 - 1.0 / steps) / max(steps - 1, 1) for i in range(steps)]
    sigmas = [math.exp(mu) / (math.exp(mu) + (1 / s - 1)) for s in base] + [0.0]
    pipe.scheduler.set_timesteps(sigmas=base, mu=mu)  # the scheduler must agree with the hand schedule
    torch.testing.assert_close(pipe.scheduler.sigmas, torch.tensor(sigmas), rtol=0, atol=1e-6)

    # 4. Euler on the velocity: x <- x + (sigma_next - sigma) * v, v = transformer(x, sigma) with CFG
    for i in range(steps):
        t = pipe.scheduler.timesteps[i]  # = sigma * 1000 (float32)
        timestep = t.expand(1) / 1000  # the model multiplies by 1000 again inside
        v = tr(hidden_states=x, encoder_hidden_states=embeds, timestep=timestep, img_ids=img_ids,
               txt_ids=txt_ids, guidance=None, return_dict=False)[0]
        if cfg:
            v_neg = tr(hidden_states=x, encoder_hidden_states=neg_embeds, timestep=timestep, img_ids=img_ids,
                       txt_ids=neg_txt_ids, guidance=None, return_dict=False)[0]
            v = v_neg + guidance_scale * (v - v_neg)
        x = x + (sigmas[i + 1] - sigmas[i]) * v

    # 5. back to VAE latents: tokens -> (1, C, h, w), undo the batch-norm normalisation, unpatchify 2×2
    z = x.transpose(1, 2).reshape(1, channels, h, w)
    mean = vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
    z = z * std + mean
    z = z.reshape(1, channels // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(1, channels // 4, 2 * h, 2 * w)
    return z  # what the pipeline returns for output_type="latent"; vae.decode(z) gives the image


# --------------------------------------------------------------------------------------------------


def test_layout(pipe):
    assert type(pipe).__name__ == "Flux2KleinPipeline"
    assert pipe.vae_scale_factor == 8 and pipe.config.is_distilled is False
    assert pipe.transformer.config.in_channels == 4 * pipe.vae.config.latent_channels == pipe.vae.bn.num_features
    assert pipe.transformer.config.joint_attention_dim == len(OUT_LAYERS) * pipe.text_encoder.config.hidden_size
    assert pipe.text_encoder.config.num_hidden_layers > max(OUT_LAYERS)
    assert pipe.transformer.config.guidance_embeds is False
    assert sum(pipe.transformer.config.axes_dims_rope) == pipe.transformer.config.attention_head_dim
    assert not torch.allclose(pipe.vae.bn.running_mean, torch.zeros(16))  # normalisation is not the identity
    assert list(pipe.transformer.attn_processors) == [
        "transformer_blocks.0.attn.processor", "single_transformer_blocks.0.attn.processor"]


def test_call_gives_finite_latents(pipe):
    out = run(pipe)  # guidance_scale 4.0 by default: CFG with an empty negative prompt
    assert out.shape == (1, 4, SAMPLE_SIZE, SAMPLE_SIZE)  # un-normalised, unpatchified VAE latents
    assert torch.isfinite(out).all()
    image = pipe(prompt=PROMPT, height=SIZE, width=SIZE, num_inference_steps=2, output_type="pt",
                 generator=torch.Generator().manual_seed(0), max_sequence_length=32).images
    assert image.shape == (1, 3, SIZE, SIZE) and torch.isfinite(image).all()


def test_tokenizer_gives_real_distinct_ids(pipe):
    tok = pipe.tokenizer
    assert type(tok).__name__ == "Qwen2Tokenizer"  # transformers 5: Qwen2TokenizerFast is the same class
    ids = tok(PROMPT).input_ids
    specials = set(tok.all_special_ids)
    assert len(ids) == len(set(ids)) == len(PROMPT.split()) and not specials & set(ids)
    assert tok.convert_ids_to_tokens(ids) == ["a", "Ġred", "Ġcircle", "Ġon", "Ġwhite", "Ġbackground"]
    for word in WORDS:  # every word is one token, bare or after a space
        assert len(tok(word).input_ids) == 1 and len(tok(" " + word).input_ids) == 1, word
    text = templated(tok, PROMPT)
    assert text == f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert tok.convert_ids_to_tokens(tok(text).input_ids) == [
        "<|im_start|>", "user", "Ċ", "a", "Ġred", "Ġcircle", "Ġon", "Ġwhite", "Ġbackground", "<|im_end|>", "Ċ",
        "<|im_start|>", "assistant", "Ċ", "<think>", "ĊĊ", "</think>", "ĊĊ"]
    padded = tok(text, padding="max_length", truncation=True, max_length=24)
    assert padded.input_ids[18:] == [tok.pad_token_id] * 6 and padded.attention_mask == [1] * 18 + [0] * 6
    assert (tok.pad_token, tok.eos_token, tok.padding_side) == ("<|endoftext|>", "<|im_end|>", "right")
    assert tok("zebra!").input_ids  # unseen text still tokenizes (byte level): no unknown token exists


def test_save_and_reload_offline(pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from diffusers import Flux2KleinPipeline

    pipe.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = Flux2KleinPipeline.from_pretrained(tmp_path, local_files_only=True)
    reloaded.set_progress_bar_config(disable=True)
    a, b = pipe.tokenizer, reloaded.tokenizer
    assert type(a) is type(b) and b.chat_template == a.chat_template
    for text in (PROMPT, templated(a, PROMPT), templated(a, "")):
        assert b(text).input_ids == a(text).input_ids
        assert b(text, padding="max_length", max_length=40).input_ids == a(text, padding="max_length",
                                                                            max_length=40).input_ids
    assert reloaded.config.is_distilled is False
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(reloaded.scheduler.config) == public(pipe.scheduler.config)
    torch.testing.assert_close(reloaded.vae.bn.running_mean, pipe.vae.bn.running_mean)
    torch.testing.assert_close(reloaded.vae.bn.running_var, pipe.vae.bn.running_var)
    torch.testing.assert_close(run(reloaded), run(pipe), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
def test_hand_written_loop_matches_pipeline(pipe, guidance_scale):
    expected = run(pipe, guidance_scale=guidance_scale, seed=3)
    got = hand_loop(pipe, PROMPT, height=SIZE, width=SIZE, steps=2, guidance_scale=guidance_scale, seed=3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@torch.no_grad()
def test_image_encoding_is_the_inverse_of_the_output_path(pipe):
    """How an image gets into the transformer's space (the pipeline's reference-image path, and what an
    inversion needs): VAE posterior mode -> patchify 2×2 -> (z - bn mean) / sqrt(bn var + eps)."""
    vae = pipe.vae
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = vae.encode(image).latent_dist.mode()  # (1, 4, 8, 8)
    c, hh, ww = z.shape[1:]
    patches = z.reshape(1, c, hh // 2, 2, ww // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(1, 4 * c, hh // 2, ww // 2)
    mean = vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
    normalised = (patches - mean) / std
    torch.testing.assert_close(pipe._encode_vae_image(image, generator=None), normalised)
    torch.testing.assert_close(pipe._patchify_latents(z), patches)
    torch.testing.assert_close(pipe._unpatchify_latents(normalised * std + mean), z)
    tokens = pipe._pack_latents(normalised)  # (1, 16 tokens, 16 channels), raster order
    ids = pipe._prepare_latent_ids(normalised)
    torch.testing.assert_close(pipe._unpack_latents_with_ids(tokens, ids, hh // 2, ww // 2), normalised)


# --------------------------------------------------------------------------------------------------
# hand-written attention processors (plain SDPA, RoPE written out) in place of diffusers' own
# --------------------------------------------------------------------------------------------------


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, S, H, D); cos, sin (S, D), each frequency repeated twice: rotate the pairs (x0, x1), (x2, x3)..."""
    pairs = x.float().unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (x.float() * cos[None, :, None] + rotated * sin[None, :, None]).to(x.dtype)


def sdpa(q, k, v):  # (B, S, H, D) in and out
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


class DoubleStream:
    """Flux2AttnProcessor: text tokens first in one joint attention, split back afterwards."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        heads = lambda t: t.unflatten(-1, (-1, attn.head_dim))  # noqa: E731
        q, k, v = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states)), heads(attn.to_v(hidden_states))
        q, k = attn.norm_q(q), attn.norm_k(k)
        cq, ck, cv = (heads(attn.add_q_proj(encoder_hidden_states)), heads(attn.add_k_proj(encoder_hidden_states)),
                      heads(attn.add_v_proj(encoder_hidden_states)))
        cq, ck = attn.norm_added_q(cq), attn.norm_added_k(ck)
        q, k, v = torch.cat([cq, q], 1), torch.cat([ck, k], 1), torch.cat([cv, v], 1)
        cos, sin = image_rotary_emb
        out = sdpa(rope(q, cos, sin), rope(k, cos, sin), v).flatten(2)
        n_txt = encoder_hidden_states.shape[1]
        return attn.to_out[0](out[:, n_txt:]), attn.to_add_out(out[:, :n_txt])


class SingleStream:
    """Flux2ParallelSelfAttnProcessor: one fused projection to q, k, v and the SwiGLU MLP input."""

    def __call__(self, attn, hidden_states, attention_mask=None, image_rotary_emb=None):
        proj = attn.to_qkv_mlp_proj(hidden_states)
        qkv, mlp = proj.split([3 * attn.inner_dim, proj.shape[-1] - 3 * attn.inner_dim], dim=-1)
        q, k, v = (t.unflatten(-1, (-1, attn.head_dim)) for t in qkv.chunk(3, dim=-1))
        q, k = attn.norm_q(q), attn.norm_k(k)
        cos, sin = image_rotary_emb
        out = sdpa(rope(q, cos, sin), rope(k, cos, sin), v).flatten(2)
        gate, lin = mlp.chunk(2, dim=-1)
        return attn.to_out(torch.cat([out, F.silu(gate) * lin], dim=-1))


@torch.no_grad()
def test_hand_written_processors_match():
    pipe = tiny_flux2_klein_pipeline(sample_size=SAMPLE_SIZE)
    tr = pipe.transformer
    torch.manual_seed(1)
    n_txt, h = 12, SAMPLE_SIZE // 2
    x = torch.randn(2, h * h, tr.config.in_channels)
    ctx = torch.randn(2, n_txt, tr.config.joint_attention_dim)
    txt_ids = pipe._prepare_text_ids(ctx)
    img_ids = pipe._prepare_latent_ids(torch.zeros(2, tr.config.in_channels, h, h))
    kwargs = dict(hidden_states=x, encoder_hidden_states=ctx, timestep=torch.tensor([0.7, 0.3]), img_ids=img_ids,
                  txt_ids=txt_ids, return_dict=False)
    expected = tr(**kwargs)[0]
    tr.set_attn_processor({"transformer_blocks.0.attn.processor": DoubleStream(),
                           "single_transformer_blocks.0.attn.processor": SingleStream()})
    assert [type(p).__name__ for p in tr.attn_processors.values()] == ["DoubleStream", "SingleStream"]
    torch.testing.assert_close(tr(**kwargs)[0], expected, rtol=0, atol=1e-5)

"""Build the toy model's components (a real Stable Diffusion 1.x-shaped pipeline, tiny) from
configs. Pure functions: nothing here trains or reads files.

The pieces and their SD 1.5 counterparts:

* ``CLIPTokenizer`` over the toy world's caption words (BPE vocabulary and merges built here);
* ``CLIPTextModel``: 128 wide, 3 layers, 77 positions;
* ``AutoencoderKL``: 64x64x3 pixels <-> 16x16x4 latents (factor 4, where SD's is 8);
* ``UNet2DConditionModel``: CrossAttnDownBlock2D / UNetMidBlock2DCrossAttn / CrossAttnUpBlock2D
  on 16x16x4 latents, cross-attending to the text encoder's hidden states;
* ``DDIMScheduler``: exactly SD 1.5's noise schedule and DDIM settings.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .world import BASE_SIZE, caption_words

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "MAX_LENGTH",
    "TEXT_CONFIG",
    "VAE_CONFIG",
    "UNET_CONFIG",
    "SCHEDULER_CONFIG",
    "bpe_vocab_and_merges",
    "build_tokenizer",
    "build_text_encoder",
    "build_vae",
    "build_unet",
    "build_scheduler",
    "build_pipeline",
    "count_parameters",
    "write_slow_tokenizer_files",
]

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MAX_LENGTH = 77
LATENT_CHANNELS = 4

TEXT_CONFIG = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=MAX_LENGTH,
    hidden_act="quick_gelu",
    projection_dim=128,
)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64),  # 3 blocks -> 2 downsamples: 64 -> 16
    layers_per_block=1,
    latent_channels=LATENT_CHANNELS,
    norm_num_groups=8,
    sample_size=BASE_SIZE,
    scaling_factor=1.0,  # replaced by 1 / std(latents) after the VAE is trained
)

UNET_CONFIG = dict(
    sample_size=BASE_SIZE // 4,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(48, 96, 128),
    layers_per_block=1,
    # diffusers' legacy name for the number of heads, per block: head widths 24, 24, 32. Eight heads
    # of width 6-16 made CPU training 1.4x slower per step for the same parameters.
    attention_head_dim=(2, 4, 4),
    norm_num_groups=16,
    cross_attention_dim=TEXT_CONFIG["hidden_size"],
    flip_sin_to_cos=True,
    freq_shift=0,
)

# Stable Diffusion 1.5's scheduler config (DDIM).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
    timestep_spacing="leading",
)


def bpe_vocab_and_merges(words: list[str] | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE vocabulary in which every caption word is one token.

    The merges are learnt by byte-pair encoding's own training loop over the word list (most frequent
    adjacent pair first, ties broken alphabetically) until every word is a single symbol, so encoding
    (which replays merges by rank) reproduces exactly one token per word and every intermediate merge
    result is in the vocabulary. Letters stay in the vocabulary (``c`` and ``c</w>``), so unseen
    words still tokenize into pieces rather than into unknown tokens.

    Args:
        words: the words; the toy world's caption words by default.

    Returns:
        ``(vocab, merges)``: token -> id, and the merges in rank order.
    """
    words = caption_words() if words is None else list(words)
    letters = sorted({ch for word in words for ch in word} | set("abcdefghijklmnopqrstuvwxyz"))
    vocab: dict[str, int] = {BOS_TOKEN: 0, EOS_TOKEN: 1}
    for letter in letters:
        vocab.setdefault(letter, len(vocab))
    for letter in letters:
        vocab.setdefault(letter + "</w>", len(vocab))

    segmented = {word: [*word[:-1], word[-1] + "</w>"] for word in words}
    merges = learn_merges(segmented, vocab)
    for word in words:  # every word ends as one "word</w>" token
        assert segmented[word] == [word + "</w>"], (word, segmented[word])
    return vocab, merges


def learn_merges(segmented: dict[str, list[str]], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE training until every piece is one symbol: merge the most frequent pair (ties alphabetical)
    in every piece, add the merged symbol to ``vocab``; ``segmented`` (piece → symbols) is updated in
    place. Returns the merges in rank order."""
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter(pair for symbols in segmented.values()
                                                  for pair in zip(symbols, symbols[1:]))
        if not pairs:
            return merges
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        merged = best[0] + best[1]
        vocab.setdefault(merged, len(vocab))
        for piece, symbols in segmented.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            segmented[piece] = out


def build_tokenizer(words: list[str] | None = None) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` whose vocabulary holds every word (default: the caption words) as one token.

    Built from in-memory ``vocab``/``merges`` (with transformers 5, ``vocab_file``/``merges_file``
    arguments silently give a 2-token vocabulary).
    """
    vocab, merges = bpe_vocab_and_merges(words)
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=MAX_LENGTH,
    )


def build_text_encoder(tokenizer: CLIPTokenizer, seed: int = 0) -> CLIPTextModel:
    """A tiny, randomly initialised ``CLIPTextModel`` sized for ``tokenizer``."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TEXT_CONFIG,
    )
    torch.manual_seed(seed)
    return CLIPTextModel(config)


def build_vae(seed: int = 0) -> AutoencoderKL:
    """A randomly initialised ``AutoencoderKL``: 64x64x3 <-> 16x16x4."""
    torch.manual_seed(seed)
    return AutoencoderKL(**VAE_CONFIG)


def build_unet(seed: int = 0) -> UNet2DConditionModel:
    """A randomly initialised SD-shaped ``UNet2DConditionModel`` for 16x16x4 latents."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(**UNET_CONFIG)


def build_scheduler() -> DDIMScheduler:
    """``DDIMScheduler`` with Stable Diffusion 1.5's configuration."""
    return DDIMScheduler(**SCHEDULER_CONFIG)


def build_pipeline(
    vae: AutoencoderKL | None = None,
    text_encoder: CLIPTextModel | None = None,
    tokenizer: CLIPTokenizer | None = None,
    unet: UNet2DConditionModel | None = None,
    scheduler: DDIMScheduler | None = None,
    seed: int = 0,
) -> StableDiffusionPipeline:
    """Assemble a ``StableDiffusionPipeline`` (no safety checker); missing parts are built fresh."""
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    return StableDiffusionPipeline(
        vae=vae if vae is not None else build_vae(seed),
        text_encoder=text_encoder if text_encoder is not None else build_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        unet=unet if unet is not None else build_unet(seed),
        scheduler=scheduler if scheduler is not None else build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def write_slow_tokenizer_files(tokenizer_dir: str) -> None:
    """Write ``vocab.json`` and ``merges.txt`` beside ``tokenizer.json``.

    transformers 5 saves only ``tokenizer.json``; older releases' ``CLIPTokenizer`` needs these two
    files to load the folder.
    """
    vocab, merges = bpe_vocab_and_merges()
    with open(os.path.join(tokenizer_dir, "vocab.json"), "w", encoding="utf-8") as handle:
        json.dump(vocab, handle, ensure_ascii=False)
    with open(os.path.join(tokenizer_dir, "merges.txt"), "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n")
        handle.writelines(f"{a} {b}\n" for a, b in merges)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

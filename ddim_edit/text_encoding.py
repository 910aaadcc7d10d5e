"""Prompt encoding per model family, as the diffusers pipelines do it.

- SD 1.x/2.x (:func:`encode_sd`): one CLIP text encoder, its last hidden states.
- SDXL (:func:`encode_sdxl`): two encoders; the penultimate hidden states of both, concatenated on
  the feature axis, and the second encoder's projected pooled output (``text_embeds``). An empty
  *negative* prompt becomes all zeros when the pipeline's config says ``force_zeros_for_empty_prompt``
  (what ``StableDiffusionXLPipeline`` does when no negative prompt is given).

Both return the per-prompt tensors that :class:`~ddim_edit.conditioning.PromptEmbeds` is made of;
the size conditioning (``time_ids``) is added by :func:`sdxl_time_ids`, as it depends on the image.
"""

from __future__ import annotations

from typing import Sequence

import torch


def token_ids(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """[len(prompts), model_max_length] ids, padded to the maximum length (as the pipelines)."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def encode_sd(tokenizer, text_encoder, prompts: Sequence[str], device: torch.device) -> dict[str, torch.Tensor]:
    """SD 1.x/2.x: ``{"hidden": [B, 77, D]}``, the encoder's last hidden states."""
    with torch.no_grad():
        hidden = text_encoder(token_ids(tokenizer, prompts).to(device))[0]
    return {"hidden": hidden}


def encode_sdxl(tokenizers: Sequence, text_encoders: Sequence, prompts: Sequence[str],
                device: torch.device) -> dict[str, torch.Tensor]:
    """SDXL: ``{"hidden": [B, 77, D1 + D2], "text_embeds": [B, P]}``.

    ``hidden`` concatenates each encoder's penultimate hidden states; ``text_embeds`` is the first
    2-D output among the encoders (the projected pooled output of ``CLIPTextModelWithProjection``).
    """
    hidden_states, pooled = [], None
    with torch.no_grad():
        for tokenizer, encoder in zip(tokenizers, text_encoders):
            out = encoder(token_ids(tokenizer, prompts).to(device), output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:
                pooled = out[0]
            hidden_states.append(out.hidden_states[-2])
    if pooled is None:
        raise ValueError("no SDXL text encoder returned a pooled embedding (text_encoder_2 must be "
                         "CLIPTextModelWithProjection)")
    return {"hidden": torch.cat(hidden_states, dim=-1), "text_embeds": pooled}


def sdxl_time_ids(image_size: tuple[int, int], rows: int, device: torch.device) -> torch.Tensor:
    """SDXL's size conditioning [rows, 6]: original size, crop top-left (0, 0), target size.

    As ``StableDiffusionXLPipeline`` by default, the original and target sizes are the generated
    image's (height, width).
    """
    height, width = image_size
    ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32, device=device)
    return ids.expand(rows, -1)

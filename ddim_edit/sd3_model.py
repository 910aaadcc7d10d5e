"""The model adapter of Stable Diffusion 3 / 3.5: an MMDiT (``SD3Transformer2DModel``) conditioned on
CLIP-L + CLIP-G token states (T5's appended when the model has it) and their pooled embeddings,
with classifier-free guidance, on the flow stepper."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import AttentionSite
from .conditioning import PromptEmbeds
from .flow_model import FlowModel
from .joint_attention import SD3


@dataclass
class SD3Model(FlowModel):
    """SD3's adapter: the pipeline's prompt encoding and one transformer call per batch."""

    DEFAULT_GUIDANCE = 7.0
    MAX_SEQUENCE_LENGTH = 256
    """T5 tokens the text sequence carries after CLIP's 77 (diffusers' default for SD3)."""

    def encode_text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            hidden, _, pooled, _ = self.pipeline.encode_prompt(
                prompt=prompts, prompt_2=None, prompt_3=None, device=self.device, do_classifier_free_guidance=False,
                max_sequence_length=self.MAX_SEQUENCE_LENGTH)
        return {"hidden": hidden, "pooled": pooled}

    def forward(self, latents: torch.Tensor, timestep: float, conditioning: PromptEmbeds, guidance_scale: float,
                attention_kwargs: dict | None) -> torch.Tensor:
        t = torch.full((latents.shape[0],), float(timestep), device=self.device, dtype=torch.float32)
        return self.denoiser(hidden_states=latents, timestep=t, encoder_hidden_states=conditioning.hidden,
                             pooled_projections=conditioning.added["pooled_projections"],
                             joint_attention_kwargs=attention_kwargs, return_dict=False)[0]

    @property
    def text_length(self) -> int:
        """CLIP's 77 tokens (its words from position 1), then T5's (zeros without T5)."""
        return int(self.tokenizer.model_max_length) + self.MAX_SEQUENCE_LENGTH

    def site(self, name: str) -> AttentionSite:
        """``transformer_blocks.i.attn`` is joint (image tokens, then text); SD3.5's ``attn2`` is
        self-attention over the image tokens."""
        parts = name.split(".")
        block, layers = int(parts[1]), int(self.denoiser.config.num_layers)
        stage = "encoder" if block < layers / 2 else "decoder"
        return AttentionSite(name, "self" if parts[2] == "attn2" else "joint", stage, self.token_level, SD3)

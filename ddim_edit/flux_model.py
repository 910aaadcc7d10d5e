"""The model adapter of FLUX.1 [dev]/[schnell]: double- and single-stream transformer blocks
(``FluxTransformer2DModel``) conditioned on T5 token states and CLIP's pooled embedding, with
*embedded* guidance ([dev]: the guidance value is a model input, one evaluation per step, no
classifier-free guidance; [schnell] has none), on latents packed 2×2 into tokens inside the call."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import AttentionSite
from .conditioning import PromptEmbeds
from .flow_model import FlowModel
from .joint_attention import FLUX


@dataclass
class FluxModel(FlowModel):
    """FLUX's adapter: the pipeline's prompt encoding, latent packing and one transformer call per batch."""

    DEFAULT_GUIDANCE = 3.5
    EMBEDDED_GUIDANCE = True
    UNSHIFTED_SIGMAS = True
    MAX_SEQUENCE_LENGTH = 512
    """T5 tokens of the text sequence (diffusers' default for FLUX)."""

    FIRST_WORD_POSITION = 0
    """T5 has no start token: a prompt's first word piece is the sequence's first token."""

    @property
    def text_length(self) -> int:
        return self.MAX_SEQUENCE_LENGTH

    @property
    def word_tokenizer(self):
        """T5's tokenizer: its tokens are the text sequence the attention sees."""
        return self.tokenizer_2

    @property
    def latent_patch(self) -> int:
        return 2  # 2×2 latent pixels per token (packed into channels; the transformer's own patch is 1)

    def encode_text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            hidden, pooled, _ = self.pipeline.encode_prompt(prompt=prompts, prompt_2=None, device=self.device,
                                                            max_sequence_length=self.MAX_SEQUENCE_LENGTH)
        return {"hidden": hidden, "pooled": pooled}

    def forward(self, latents: torch.Tensor, timestep: float, conditioning: PromptEmbeds, guidance_scale: float,
                attention_kwargs: dict | None) -> torch.Tensor:
        batch, channels, height, width = latents.shape
        pipe = self.pipeline
        packed = pipe._pack_latents(latents, batch, channels, height, width)
        image_ids = pipe._prepare_latent_image_ids(batch, height // 2, width // 2, self.device, self.dtype)
        text_ids = torch.zeros(conditioning.hidden.shape[1], 3, device=self.device, dtype=self.dtype)
        t = torch.full((batch,), float(timestep), device=self.device, dtype=torch.float32).to(self.dtype)
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((batch,), float(guidance_scale), device=self.device, dtype=torch.float32)
        output = self.denoiser(hidden_states=packed, timestep=t / 1000, guidance=guidance,
                               pooled_projections=conditioning.added["pooled_projections"],
                               encoder_hidden_states=conditioning.hidden, txt_ids=text_ids, img_ids=image_ids,
                               joint_attention_kwargs=attention_kwargs, return_dict=False)[0]
        factor = self.vae_scale_factor
        return pipe._unpack_latents(output, height * factor, width * factor, factor)

    def site(self, name: str) -> AttentionSite:
        """Double-stream blocks (``transformer_blocks``, the ``encoder`` stage) and single-stream blocks
        (``single_transformer_blocks``, the ``decoder`` stage) are joint attention, text tokens first."""
        if name.startswith("single_transformer_blocks."):
            return AttentionSite(name, "joint", "decoder", self.token_level, FLUX, text_tokens=self.text_length)
        return AttentionSite(name, "joint", "encoder", self.token_level, FLUX)

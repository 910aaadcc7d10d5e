"""The model adapter of FLUX.2 [klein]: double- and single-stream transformer blocks
(``Flux2Transformer2DModel``) conditioned on three hidden layers of a Qwen3 text encoder (prompts in
its chat template), classifier-free guidance on the base models and none on the step-distilled ones,
on the flow stepper with FLUX.2's empirical shift.

FLUX.2's VAE (``AutoencoderKLFlux2``) has no scale or shift: the transformer works on the VAE latent
cut into 2×2 patches and normalised by the VAE's batch-norm statistics. Those patched, normalised
latents [B, 4·C, H/16, W/16] are the engine's latents here (one position per image token), so masks,
blends and trajectories stay spatial; the adapter flattens them into tokens inside its call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import AttentionSite
from .conditioning import PromptEmbeds
from .flow_model import FlowModel
from .joint_attention import FLUX2, FLUX2_SINGLE


@dataclass
class Flux2KleinModel(FlowModel):
    """FLUX.2 [klein]'s adapter (see the module docstring)."""

    UNSHIFTED_SIGMAS = True
    MAX_SEQUENCE_LENGTH = 512
    """Qwen3 tokens of the text sequence (diffusers' default for FLUX.2)."""
    FIRST_WORD_POSITION = 3
    """The chat template puts ``<|im_start|>``, ``user`` and a newline before the prompt's first token."""

    @property
    def distilled(self) -> bool:
        """Step-distilled klein models sample without guidance."""
        return bool(self.pipeline.config.is_distilled)

    @property
    def DEFAULT_GUIDANCE(self) -> float:  # noqa: N802 (the adapters' class attribute, per model here)
        return 1.0 if self.distilled else 4.0

    @property
    def classifier_free(self) -> bool:
        return not self.distilled  # as the pipeline: a distilled model ignores the guidance

    # ------------------------------------------------------------------ sizes
    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent position: the VAE's 8 times the 2×2 patch."""
        return 2 ** len(self.vae.config.block_out_channels)

    @property
    def latent_patch(self) -> int:
        return 1  # the engine's latents are already one position per token

    @property
    def latent_channels(self) -> int:
        return 4 * int(self.vae.config.latent_channels)

    @property
    def native_size(self) -> int:
        return int(self.pipeline.default_sample_size) * int(self.pipeline.vae_scale_factor)

    # ------------------------------------------------------------------ the stepper
    def shift_mu(self, image_size: tuple[int, int] | None, steps: int) -> float:
        """FLUX.2's empirical μ, a function of the image tokens and the number of steps."""
        from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

        return compute_empirical_mu(self.image_tokens(image_size), steps)

    # ------------------------------------------------------------------ VAE
    def from_vae(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE's latent → 2×2 patches normalised by the VAE's batch-norm statistics."""
        patched = self.pipeline._patchify_latents(z)
        mean, std = self._statistics(patched)
        return (patched - mean) / std

    def to_vae(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._statistics(latents)
        return self.pipeline._unpatchify_latents(latents * std + mean)

    def _statistics(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(like.device, like.dtype)
        return mean, std

    # ------------------------------------------------------------------ text
    def encode_text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            hidden, _ = self.pipeline.encode_prompt(prompt=prompts, device=self.device,
                                                    max_sequence_length=self.MAX_SEQUENCE_LENGTH)
        return {"hidden": hidden}

    @property
    def text_length(self) -> int:
        return self.MAX_SEQUENCE_LENGTH

    def check_prompt_length(self, prompt: str) -> None:
        """Qwen3 reads 512 tokens, the chat template's included: refuse longer prompts in one line."""
        from .errors import PromptError

        count = len(self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                                       add_generation_prompt=True, enable_thinking=False))
        if count > self.text_length:
            raise PromptError(f"the prompt is {count} tokens long with the chat template; the text encoder reads at "
                              f"most {self.text_length}: shorten it", value=count)

    def prompt_tokens(self, prompt: str) -> list[str]:
        """The prompt's tokens as they read after a space (so a word's pieces are the same alone and in a
        prompt); piece k sits at position :attr:`FIRST_WORD_POSITION` + k."""
        self.check_prompt_length(prompt)
        return self.tokenizer.tokenize(" " + prompt.strip())

    # ------------------------------------------------------------------ the denoiser
    def forward(self, latents: torch.Tensor, timestep: float, conditioning: PromptEmbeds, guidance_scale: float,
                attention_kwargs: dict | None) -> torch.Tensor:
        batch, channels, height, width = latents.shape
        pipe = self.pipeline
        tokens = latents.flatten(2).transpose(1, 2)
        image_ids = pipe._prepare_latent_ids(latents).to(self.device)
        text_ids = pipe._prepare_text_ids(conditioning.hidden).to(self.device)
        t = torch.full((batch,), float(timestep), device=self.device, dtype=torch.float32).to(self.dtype)
        output = self.denoiser(hidden_states=tokens, timestep=t / 1000, guidance=None,
                               encoder_hidden_states=conditioning.hidden, txt_ids=text_ids, img_ids=image_ids,
                               joint_attention_kwargs=attention_kwargs, return_dict=False)[0]
        return output[:, : height * width].transpose(1, 2).reshape(batch, channels, height, width)

    # ------------------------------------------------------------------ attention sites
    def site(self, name: str) -> AttentionSite:
        """Double-stream blocks (the ``encoder`` stage, ``Flux2AttnProcessor``) and single-stream blocks (the
        ``decoder``, ``Flux2ParallelSelfAttnProcessor``): joint attention, text tokens first."""
        if name.startswith("single_transformer_blocks."):
            return AttentionSite(name, "joint", "decoder", self.token_level, FLUX2_SINGLE, text_tokens=self.text_length)
        return AttentionSite(name, "joint", "encoder", self.token_level, FLUX2)

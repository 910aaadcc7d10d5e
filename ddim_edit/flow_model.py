"""What the rectified-flow families (SD3, FLUX.1, FLUX.2 [klein]) share as model adapters: a
transformer that predicts the velocity, the flow-matching Euler stepper
(:class:`~ddim_edit.flow_schedule.FlowSchedule`) with the pipeline's own sigmas and shift, joint
attention sites, and image tokens of ``latent_patch``² latent positions.

The latents the engine keeps are spatial, [B, C, h, w], for every family (the VAE's; FLUX.2's own
patched, normalised ones): masks, blends and trajectories stay spatial, and FLUX packs them into
tokens inside its denoiser call only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .attention import ROLES, STAGES, AttentionSite
from .conditioning import PromptEmbeds
from .errors import ScheduleError
from .flow_schedule import FLOW_STEPPER, FlowSchedule
from .model import EditModel, TEXT_ENCODERS


@dataclass
class FlowModel(EditModel):
    """A rectified-flow model adapter (see the module docstring).

    Attributes:
        pipeline: the diffusers pipeline, whose own prompt encoding the adapter calls.
    """

    pipeline: Any = None

    DENOISER = "transformer"
    UNSHIFTED_SIGMAS = False
    """Whether the pipeline passes σ = linspace(1, 1/N, N) to the scheduler (FLUX) instead of letting it space them (SD3)."""

    @classmethod
    def wrap(cls, pipe, name: str, device: torch.device, dtype: torch.dtype, family: str) -> "FlowModel":
        return cls(pipe.transformer, pipe.vae, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config), name,
                   device, dtype, family=family, tokenizer_2=getattr(pipe, "tokenizer_2", None),
                   text_encoder_2=getattr(pipe, "text_encoder_2", None), pipeline=pipe)

    # ------------------------------------------------------------------ sizes
    @property
    def latent_patch(self) -> int:
        """The side, in latent pixels, of one image token."""
        return int(self.denoiser.config.patch_size)

    @property
    def size_multiple(self) -> int:
        return self.vae_scale_factor * self.latent_patch

    @property
    def native_size(self) -> int:
        return int(self.pipeline.default_sample_size) * self.vae_scale_factor

    def components(self) -> dict[str, torch.nn.Module]:
        parts = {"transformer": self.denoiser, "vae": self.vae}
        for name in TEXT_ENCODERS:
            encoder = getattr(self.pipeline, name, None)
            if encoder is not None:
                parts[name] = encoder
        return parts

    def _embeds(self, text: dict[str, torch.Tensor], image_size: tuple[int, int] | None) -> PromptEmbeds:
        """The text sequence and, where the family has one (SD3, FLUX.1), the pooled embedding."""
        added = {"pooled_projections": text["pooled"]} if "pooled" in text else {}
        return PromptEmbeds(text["hidden"], added)

    # ------------------------------------------------------------------ the stepper
    def make_schedule(self, steps: int | None, spacing: str | None = None, timesteps: Sequence[int] | None = None,
                      image_size: tuple[int, int] | None = None) -> FlowSchedule:
        """The pipeline's own sigmas for ``steps`` at ``image_size`` (h, w) pixels (default: native)."""
        if spacing is not None or timesteps is not None:
            what = "--spacing" if spacing is not None else "--timesteps"
            raise ScheduleError(f"{what} chooses DDIM timesteps; {self.family.upper()} is a flow model whose sigmas "
                                "follow its scheduler: give --steps only", field="spacing" if spacing else "timesteps")
        if steps is None:
            raise ScheduleError("give the number of steps", field="num_steps")
        sigmas = np.linspace(1.0, 1.0 / steps, steps).tolist() if self.UNSHIFTED_SIGMAS else None
        return FlowSchedule.from_scheduler_config(self.scheduler_config, steps, sigmas,
                                                  self.shift_mu(image_size, steps))

    def image_tokens(self, image_size: tuple[int, int] | None) -> int:
        """How many image tokens an image of ``image_size`` (h, w) pixels (default: native) makes."""
        height, width = image_size or self.default_image_size()
        side = self.size_multiple
        return (int(height) // side) * (int(width) // side)

    def shift_mu(self, image_size: tuple[int, int] | None, steps: int) -> float | None:
        """The resolution-dependent shift μ of a scheduler with dynamic shifting (None without it):
        linear in the number of image tokens, as diffusers' SD3 and FLUX pipelines compute it."""
        config = self.scheduler_config
        if not config.get("use_dynamic_shifting"):
            return None
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        return calculate_shift(self.image_tokens(image_size), config.get("base_image_seq_len", 256),
                               config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                               config.get("max_shift", 1.15))

    def recorded_schedule(self, schedule: dict, timesteps: Sequence[int]) -> FlowSchedule:
        from .errors import TrajectoryError

        if schedule.get("stepper") != FLOW_STEPPER:
            raise TrajectoryError(f"this trajectory was made with a DDIM model; {self.family.upper()} replays "
                                  "flow trajectories only: pass the model it was made with", field="model")
        return FlowSchedule.from_json(schedule)

    # ------------------------------------------------------------------ attention sites
    def attention_sites(self, roles: tuple[str, ...] = ROLES, stages: tuple[str, ...] = STAGES) -> list[AttentionSite]:
        """The transformer's attention sites with one of ``roles`` in one of ``stages`` (see :meth:`site`)."""
        sites = [self.site(name) for name in self.denoiser.attn_processors]
        return [site for site in sites if site.role in roles and site.stage in stages]

    def site(self, name: str) -> AttentionSite:
        """The site of processor ``name``: a transformer has one resolution (its token grid, the latent
        over ``latent_patch``), so its first half of blocks is the ``encoder`` stage and the rest the
        ``decoder`` (where a UNet's would sit)."""
        raise NotImplementedError

    @property
    def token_level(self) -> int:
        """The resolution level of the token grid: the latent's side over 2^level."""
        return int(math.log2(self.latent_patch))

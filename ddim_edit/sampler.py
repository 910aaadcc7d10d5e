"""The one DDIM sampling loop that reconstruction and every edit run through.

Like k-diffusion's samplers, :func:`sample` is a function over a denoiser (``EditModel.denoise``)
and an explicit schedule. Edits change what happens around each step through
:class:`SamplerHook` objects: they see the step before the UNet runs (to set attention control
state) and may replace the latents after the step (to blend in the source branch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .conditioning import Conditioning, PromptEmbeds  # noqa: F401 (re-exported: what sample takes)
from .schedule import Schedule, work_dtype


@dataclass(frozen=True)
class StepInfo:
    """Where the sampler is: step ``index`` goes from ``timestep`` to the next in the list."""

    index: int
    timestep: int
    num_steps: int

    @property
    def fraction(self) -> float:
        """How far along the sampling is, in [0, 1): step index / number of steps."""
        return self.index / self.num_steps


class SamplerHook:
    """Per-step extension point. Subclasses override one or both methods."""

    def before_step(self, step: StepInfo, latents: torch.Tensor) -> None:
        """Called before the UNet runs at ``step`` on ``latents`` (z_t)."""

    def after_step(self, step: StepInfo, latents: torch.Tensor) -> torch.Tensor:
        """Called with z_s after the update; returns the latents the loop continues with."""
        return latents


def sample(
    model,
    schedule: Schedule,
    latents: torch.Tensor,
    conditioning: Conditioning,
    guidance_scale: float,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    corrections: torch.Tensor | None = None,
    hooks: Sequence[SamplerHook] = (),
    start_index: int = 0,
    progress: bool = True,
    desc: str = "sampling",
) -> torch.Tensor:
    """Run the DDIM sampler from the latents at ``schedule.timesteps[start_index]`` to z_0.

    Args:
        model: an object with ``denoise(latents, t, cond, uncond, guidance_scale)`` (EditModel);
            ``cond`` / ``uncond`` are :class:`~ddim_edit.conditioning.PromptEmbeds`.
        schedule: the explicit timesteps and ᾱ table.
        latents: [B, C, h, w] starting latents (x_T when ``start_index`` is 0).
        conditioning: the model's conditioning per branch (prompt rows, negative rows, per-step
            null embeddings), made by ``model.encode`` / ``model.encode_negative``.
        guidance_scale: classifier-free guidance w (1 = conditional only).
        eta: DDIM η; 0 is deterministic, > 0 needs ``generator`` for reproducible noise.
        corrections: [N, B or 1, C, h, w] added after each step (exact inversion's record).
        hooks: per-step hooks, called in order.
        start_index: skip the first steps (the latents must be at that step's timestep).
        progress: show a progress bar on stderr.

    Returns:
        latents z_0, [B, C, h, w], in float64 (float32 on MPS).
    """
    dtype = work_dtype(latents.device)
    latents = latents.to(dtype)
    n = schedule.num_steps
    for i in tqdm(range(start_index, n), desc=desc, disable=not progress, leave=False):
        t = schedule.timesteps[i]
        step = StepInfo(i, t, n)
        for hook in hooks:
            hook.before_step(step, latents)
        output = model.denoise(latents, t, conditioning.cond, conditioning.uncond_at(i), guidance_scale).to(dtype)
        noise = None
        if eta > 0:
            noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32,
                                device=generator.device if generator is not None else latents.device)
            noise = noise.to(latents.device, dtype)
        latents = schedule.step(output, latents, i, eta, noise)
        if corrections is not None:
            latents = latents + corrections[i].to(latents)
        for hook in hooks:
            latents = hook.after_step(step, latents)
    return latents

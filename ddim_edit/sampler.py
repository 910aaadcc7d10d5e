"""The one loop that sampling, inversion, reconstruction and every edit run through.

Like k-diffusion's samplers, :func:`sample` is a function over a denoiser (``EditModel.denoise``)
and an explicit schedule (the stepper: DDIM or flow Euler). Edits change what happens around each
step through :class:`SamplerHook` objects: they see the step before the denoiser runs (to set
attention control state) and may replace the latents after the step (to blend in the source
branch). Inversion is the same loop walking the schedule backwards (``reverse=True``): step i goes
from position i + 1 to i with the stepper's inverse step, or with a ``solve`` of its own
(fixed-point inversion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

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


def inverse_update(model, schedule: Schedule, index: int, sample: torch.Tensor, evaluated_at: torch.Tensor, cond,
                   uncond, guidance_scale: float) -> torch.Tensor:
    """Step ``index`` backwards from ``sample`` (position index + 1) with the model evaluated at
    ``evaluated_at`` and timestep t_index (plain inversion: at ``sample`` itself)."""
    output = model.denoise(evaluated_at, schedule.timesteps[index], cond, uncond, guidance_scale).to(sample.dtype)
    return schedule.inverse_step(output, sample, index, evaluated_at=evaluated_at)


def plain_inverse(model, schedule: Schedule, index: int, sample: torch.Tensor, cond, uncond,
                  guidance_scale: float) -> torch.Tensor:
    """The reverse walk's default step: the model evaluated at the known latents (plain DDIM / Euler inversion)."""
    return inverse_update(model, schedule, index, sample, sample, cond, uncond, guidance_scale)


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
    reverse: bool = False,
    solve: Callable = plain_inverse,
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
        reverse: walk the schedule backwards from the final state (``latents`` = z_0) to x_T,
            step i going from position i + 1 to i with ``solve`` (inversion; no ``eta``, no
            ``corrections``).
        solve: ``solve(model, schedule, i, latents, cond, uncond, guidance_scale)`` → the latents at
            position i (default :func:`plain_inverse`).

    Returns:
        latents z_0 (``reverse``: x_T), [B, C, h, w], in float64 (float32 on MPS).
    """
    dtype = work_dtype(latents.device)
    latents = latents.to(dtype)
    n = schedule.num_steps
    if reverse and (eta > 0 or corrections is not None):
        raise ValueError("a reverse walk takes neither eta nor corrections")
    order = range(n - 1, start_index - 1, -1) if reverse else range(start_index, n)
    for i in tqdm(order, desc=desc, disable=not progress, leave=False):
        t = schedule.timesteps[i]
        step = StepInfo(i, t, n)
        for hook in hooks:
            hook.before_step(step, latents)
        if reverse:
            latents = solve(model, schedule, i, latents, conditioning.cond, conditioning.uncond_at(i), guidance_scale)
            for hook in hooks:
                latents = hook.after_step(step, latents)
            continue
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

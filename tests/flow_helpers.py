"""Shared pieces of the flow-family tests: a model per family and its diffusers pipeline's own sample."""

from __future__ import annotations

import torch

from ddim_edit.model import EditModel
from ddim_edit.testing import tiny_flux_pipeline, tiny_sd3_pipeline

PROMPT = "a red circle on white background"
SIDE = 64  # pixels: 8×8 latents, 16 image tokens
BUILDERS = {"sd3": tiny_sd3_pipeline, "sd3-no-t5": lambda: tiny_sd3_pipeline(with_t5=False), "flux": tiny_flux_pipeline}
GUIDANCE = {"sd3": 7.0, "sd3-no-t5": 7.0, "flux": 3.5}  # the pipelines' defaults (FLUX's is embedded)


def flow_model(kind: str) -> tuple[object, EditModel]:
    """A tiny pipeline of ``kind`` and our adapter over it (the same modules)."""
    pipe = BUILDERS[kind]()
    return pipe, EditModel.from_pipeline(pipe, name=f"tiny-{kind}")


def pipeline_sample(pipe, x_T: torch.Tensor, steps: int, guidance: float, prompt: str = PROMPT) -> torch.Tensor:
    """The diffusers pipeline's own final latents from ``x_T`` ([1, C, h, w]), unpacked for FLUX."""
    side = x_T.shape[-1] * pipe.vae_scale_factor
    packed = hasattr(pipe, "_pack_latents")
    latents = pipe._pack_latents(x_T, 1, x_T.shape[1], x_T.shape[2], x_T.shape[3]) if packed else x_T
    out = pipe(prompt, height=side, width=side, num_inference_steps=steps, guidance_scale=guidance, latents=latents,
               output_type="latent").images
    return pipe._unpack_latents(out, side, side, pipe.vae_scale_factor) if packed else out

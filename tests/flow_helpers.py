"""Shared pieces of the flow-family tests: a model per family and its diffusers pipeline's own sample."""

from __future__ import annotations

import torch

from ddim_edit.model import EditModel
from ddim_edit.testing import tiny_flux2_klein_pipeline, tiny_flux_pipeline, tiny_sd3_pipeline

PROMPT = "a red circle on white background"
SIDE = 64  # pixels: 8×8 latents, 16 image tokens
BUILDERS = {"sd3": tiny_sd3_pipeline, "sd3-no-t5": lambda: tiny_sd3_pipeline(with_t5=False), "flux": tiny_flux_pipeline,
            "flux2": tiny_flux2_klein_pipeline}
GUIDANCE = {"sd3": 7.0, "sd3-no-t5": 7.0, "flux": 3.5, "flux2": 4.0}  # the pipelines' defaults (FLUX's is embedded)


def flow_model(kind: str) -> tuple[object, EditModel]:
    """A tiny pipeline of ``kind`` and our adapter over it (the same modules)."""
    pipe = BUILDERS[kind]()
    return pipe, EditModel.from_pipeline(pipe, name=f"tiny-{kind}")


def start_noise(model: EditModel, seed: int = 0) -> torch.Tensor:
    """x_T for a SIDE × SIDE image in the model's latent space, [1, C, h, w]."""
    side = SIDE // model.vae_scale_factor
    return torch.randn(1, model.latent_channels, side, side, generator=torch.Generator().manual_seed(seed))


def pipeline_sample(pipe, model: EditModel, x_T: torch.Tensor, steps: int, guidance: float,
                    prompt: str = PROMPT) -> torch.Tensor:
    """The diffusers pipeline's own final latents from ``x_T``, in the model's latent space (FLUX: unpacked;
    FLUX.2: the pipeline returns the VAE's latent, mapped back)."""
    kind = model.family
    latents = pipe._pack_latents(x_T, 1, x_T.shape[1], x_T.shape[2], x_T.shape[3]) if kind == "flux" else x_T
    out = pipe(prompt=prompt, height=SIDE, width=SIDE, num_inference_steps=steps, guidance_scale=guidance,
               latents=latents, output_type="latent").images
    if kind == "flux":
        return pipe._unpack_latents(out, SIDE, SIDE, pipe.vae_scale_factor)
    return model.from_vae(out) if kind == "flux2" else out

"""Which model family a folder, hub repo or checkpoint holds, and whether ddim-edit can run it.

Supported: Stable Diffusion 1.x/2.x (``sd``) and SDXL base (``sdxl``), the UNet families on the
η = 0 DDIM stepper, and Stable Diffusion 3/3.5 (``sd3``), FLUX.1 (``flux``) and FLUX.2 [klein]
(``flux2``), the rectified-flow transformers on the flow-matching Euler stepper. Anything else gets
a one-line error naming the family it is and what is supported, before any weights are read:

- a diffusers folder or hub repo: ``model_index.json``'s ``_class_name``;
- a single ``.safetensors`` file: the key names of its tensors (read from the header only).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelLoadError

SUPPORTED = ("Stable Diffusion 1.x/2.x, SDXL base, Stable Diffusion 3/3.5, FLUX.1 and FLUX.2 [klein] "
             "(StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline, FluxPipeline, "
             "Flux2KleinPipeline)")

PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionImg2ImgPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "StableDiffusion3Img2ImgPipeline": "sd3",
    "FluxPipeline": "flux",
    "FluxImg2ImgPipeline": "flux",
    "Flux2KleinPipeline": "flux2",
}
FLOW_FAMILIES = ("sd3", "flux", "flux2")
FAMILY_NAMES = {"sd": "a Stable Diffusion", "sdxl": "an SDXL", "sd3": "an SD3", "flux": "a FLUX",
                "flux2": "a FLUX.2 [klein]"}
"""How messages name a model of each family ("… is a FLUX model")."""

# class-name prefix → the family's name in messages (longest prefixes first where they overlap)
UNSUPPORTED_PREFIXES = (
    ("StableDiffusion3Inpaint", "Stable Diffusion 3 inpainting"),
    ("StableDiffusion3ControlNet", "Stable Diffusion 3 ControlNet"),
    ("Flux2", "FLUX.2 [dev] (Mistral text encoder)"),
    ("Flux", "FLUX variant (Fill, Kontext, Control, …)"),
    ("Kandinsky", "Kandinsky"),
    ("PixArt", "PixArt"),
    ("Sana", "Sana"),
    ("StableCascade", "Stable Cascade"),
    ("Wuerstchen", "Würstchen"),
    ("IF", "DeepFloyd IF"),
    ("HunyuanDiT", "Hunyuan-DiT"),
    ("AuraFlow", "AuraFlow"),
    ("Lumina", "Lumina"),
    ("CogView", "CogView"),
    ("Kolors", "Kolors"),
    ("LatentConsistencyModel", "Latent Consistency Model"),
    ("StableDiffusionXLInpaint", "SDXL inpainting"),
    ("StableDiffusionInpaint", "Stable Diffusion inpainting"),
    ("StableDiffusionUpscale", "Stable Diffusion upscaler"),
    ("StableDiffusionDepth2Img", "Stable Diffusion depth-to-image"),
    ("StableUnCLIP", "Stable unCLIP"),
    ("StableVideoDiffusion", "Stable Video Diffusion"),
)

# single-file checkpoints: a key prefix that only that family's checkpoints have
CHECKPOINT_MARKERS = (
    ("model.diffusion_model.joint_blocks.", "sd3"),
    ("joint_blocks.", "sd3"),
    ("double_blocks.", "flux"),
    ("model.diffusion_model.double_blocks.", "flux"),
    ("conditioner.embedders.1.", "sdxl"),
    ("conditioner.embedders.0.model.", "SDXL refiner"),
)


def unsupported(family: str, what: str) -> ModelLoadError:
    """The one-line error for a model of an unsupported ``family``."""
    return ModelLoadError(f"{what} is a {family} model, which ddim-edit does not support; it runs {SUPPORTED}",
                          field="model", value=what)


def family_of_class(class_name: str, what: str) -> str:
    """The family (a key of :data:`FAMILY_NAMES`) of a pipeline class name; raise the unsupported-family error otherwise."""
    if class_name in PIPELINE_FAMILIES:
        return PIPELINE_FAMILIES[class_name]
    for prefix, family in UNSUPPORTED_PREFIXES:
        if class_name.startswith(prefix):
            raise unsupported(family, what)
    raise unsupported(f"{class_name}", what)


def folder_family(path: Path) -> str:
    """The family of a diffusers folder, from ``model_index.json``."""
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path / 'model_index.json'} cannot be read ({exc}); copy the whole save_pretrained folder",
                             field="model") from exc
    family = family_of_class(str(index.get("_class_name", "")), str(path))
    if family == "sdxl":
        entry = index.get("text_encoder")
        if not isinstance(entry, list) or entry[0] is None:  # the refiner has text_encoder_2 only
            raise unsupported("SDXL refiner (no first text encoder)", str(path))
    return family


def checkpoint_family(path: Path) -> str:
    """The family of a single ``.safetensors`` checkpoint, from its tensor names (header only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:  # not a safetensors file, truncated header …
        raise ModelLoadError(f"{path} is not a readable .safetensors checkpoint ({type(exc).__name__}); "
                             "check the file or download it again", field="model") from exc
    for prefix, family in CHECKPOINT_MARKERS:
        if any(key.startswith(prefix) for key in keys):
            if family in ("sdxl",) + FLOW_FAMILIES:
                return family
            raise unsupported(family, str(path))
    return "sd"

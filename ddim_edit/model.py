"""Loading a Stable Diffusion model and the pieces every edit uses.

:func:`load_model` accepts a hub id, a local diffusers folder, a single ``.safetensors``
checkpoint (with an optional local config folder for offline use) or the alias ``toy`` (the
bundled model in ``assets/toy-model``). :class:`EditModel` holds the components and offers prompt
encoding with a cache, VAE encode/decode and the guided denoiser used by the sampler.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .attention import ROLES, STAGES, AttentionSite, attention_sites, installed_processors
from .conditioning import PromptEmbeds
from .errors import ModelLoadError, NonFiniteError, PromptError
from .families import FAMILY_NAMES, checkpoint_family, family_of_class, folder_family
from .fingerprint import architecture_fingerprint, weight_signature
from .lora import check_peft, LoraSpec, apply_loras, lora_records, parse_lora
from .schedule import Schedule
from .text_encoding import encode_sd, encode_sdxl, sdxl_time_ids

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
TOY_MODELS = {"toy": "toy-model", "bundled": "toy-model", "toy-flow": "toy-flow-model"}
"""The bundled toy models by alias → their folder in ``assets``: the UNet one (``toy``) and the SD3-layout
flow one (``toy-flow``), trained on the same toy world."""
TOY_ALIASES = tuple(TOY_MODELS)
# family → (its pipeline class, the weight sub-folders a save_pretrained folder holds); every folder
# also has the tokenizers of its text encoders and scheduler/
FAMILIES = {
    "sd": ("StableDiffusionPipeline", ("unet", "vae", "text_encoder")),
    "sdxl": ("StableDiffusionXLPipeline", ("unet", "vae", "text_encoder", "text_encoder_2")),
    "sd3": ("StableDiffusion3Pipeline", ("transformer", "vae", "text_encoder", "text_encoder_2")),
    "flux": ("FluxPipeline", ("transformer", "vae", "text_encoder", "text_encoder_2")),
    "flux2": ("Flux2KleinPipeline", ("transformer", "vae", "text_encoder")),
}
OPTIONAL_WEIGHT_FOLDERS = ("text_encoder_3",)  # SD3's T5, which a folder may leave out
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def adapter_class(family: str) -> type:
    """The model adapter of ``family`` (``sd``, ``sdxl``, ``sd3``, ``flux``, ``flux2``)."""
    if family == "sd3":
        from .sd3_model import SD3Model

        return SD3Model
    if family == "flux":
        from .flux_model import FluxModel

        return FluxModel
    if family == "flux2":
        from .flux2_model import Flux2KleinModel

        return Flux2KleinModel
    return EditModel


def assets_dir() -> Path:
    """The bundled ``assets`` folder (override with ``DDIM_EDIT_ASSETS``).

    An installed wheel carries it inside the package (``ddim_edit/assets``, see setup.py); a source
    checkout or editable install has it at the top of the tree.
    """
    env = os.environ.get("DDIM_EDIT_ASSETS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    candidates = (here / "assets", here.parent / "assets")
    return next((path for path in candidates if (path / "toy-model").is_dir()), candidates[-1])


def toy_model_path(alias: str = "toy") -> Path:
    """The folder of the bundled toy model ``alias`` (see :data:`TOY_MODELS`)."""
    return assets_dir() / TOY_MODELS[alias]


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _xpu_available() -> bool:
    xpu = getattr(torch, "xpu", None)
    return xpu is not None and bool(xpu.is_available())


def available_devices() -> list[str]:
    """The devices this machine can run on: ``cpu`` and any visible ``cuda:N``, ``mps``, ``xpu:N``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if _mps_available():
        devices.append("mps")
    if _xpu_available():
        devices += [f"xpu:{index}" for index in range(torch.xpu.device_count())]
    return devices


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must name a device that exists here.

    Raises:
        ModelLoadError: (field ``device``) naming the devices that do exist.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    present = available_devices()
    try:
        dev = torch.device(str(device).strip())
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"unknown {{field}} {device!r}; use auto or one of this machine's devices: "
                             f"{', '.join(present)}", field="device", value=device) from exc
    counts = {"cpu": 1, "cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0,
              "mps": 1 if _mps_available() else 0, "xpu": torch.xpu.device_count() if _xpu_available() else 0}
    count = counts.get(dev.type, 0)
    if count == 0 or (dev.index is not None and dev.index >= count) or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise ModelLoadError(f"{{field}} {device!r} is not available on this machine; use auto or one of: "
                             f"{', '.join(present)}", field="device", value=device)
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: float32 on CPU, float16 on CUDA; fp16/bf16 are refused on the CPU, bf16 on GPUs without it."""
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in names:
        raise ModelLoadError(f"unknown {{field}} {dtype!r}; use auto, fp32, fp16 or bf16", field="dtype", value=dtype)
    chosen = names[dtype]
    if device.type == "cpu" and chosen != torch.float32:
        raise ModelLoadError(f"{{field}} {dtype} is for GPUs; use {{field}} fp32 on the CPU", field="dtype", value=dtype)
    if device.type == "cuda" and chosen == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ModelLoadError("this GPU has no bfloat16 support; use {field} fp16", field="dtype", value=dtype)
    return chosen


@dataclass(frozen=True)
class MemoryOptions:
    """What a user with a small GPU turns on (diffusers' and accelerate's memory savers).

    Attributes:
        vae_tiling: encode and decode images larger than the VAE's tile size (its config's
            ``sample_size``: 512 for SD 1.5, 1024 for SDXL) in overlapping tiles; smaller images are
            untouched, so this is on by default.
        vae_slicing: run the VAE on one image of a batch at a time.
        cpu_offload: keep each component on the CPU and move it to the GPU only while it runs
            (``accelerate.cpu_offload_with_hook``, as diffusers' ``enable_model_cpu_offload``): the
            peak is the largest component, not the whole model. No effect on a CPU device.

    Attention needs no slicing: every attention layer runs through
    ``torch.nn.functional.scaled_dot_product_attention`` (memory-efficient / flash kernels), which
    every supported torch (≥ 2.1) has.
    """

    vae_tiling: bool = True
    vae_slicing: bool = False
    cpu_offload: bool = False


def apply_memory_options(components: list, vae, device: torch.device, options: MemoryOptions) -> None:
    """Turn on VAE tiling/slicing and, on an accelerator, model CPU offload (components in run order)."""
    if options.vae_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if options.vae_slicing and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if options.cpu_offload and device.type != "cpu":
        from accelerate import cpu_offload_with_hook

        hook = None
        for module in components:  # on the CPU already (see EditModel.from_pipeline)
            _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)


def _pipeline_class(family: str):
    import diffusers

    return getattr(diffusers, FAMILIES[family][0])


def _pipeline_kwargs(family: str) -> dict:
    # SD pipelines carry a safety checker that editing does not use; SDXL pipelines have none.
    return dict(safety_checker=None, requires_safety_checker=False) if family == "sd" else {}


def absent_components(path: Path) -> dict:
    """``name=None`` for each component a folder's ``model_index.json`` lists as absent ([null, null],
    SD3 saved without T5): diffusers loads such a folder only when told."""
    import json

    index = json.loads((path / "model_index.json").read_text())
    return {name: None for name, entry in index.items()
            if isinstance(entry, list) and len(entry) == 2 and entry[0] is None and name != "safety_checker"}


def _load_pipeline(model: str, allow_pickle: bool, config: str | None):
    """The diffusers pipeline for ``model`` (see :func:`load_model`), and its family (see :data:`FAMILIES`)."""
    from diffusers import DiffusionPipeline

    # Without --allow-pickle only safetensors weights are read: a folder or hub repo with .bin
    # pickles fails instead of running their code.
    safe_kwargs = {} if allow_pickle else {"use_safetensors": True}
    path = Path(model)
    if model in TOY_ALIASES:
        path = toy_model_path(model)
        if not (path / "model_index.json").exists():
            raise ModelLoadError(f"the bundled toy model is missing at {path}; reinstall ddim-edit from a full checkout")
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise ModelLoadError(f"{path} is not a diffusers model folder (no model_index.json); pass a folder saved with save_pretrained")
        family = folder_family(path)
        check_model_folder(path, allow_pickle, family)
        pipe = _pipeline_class(family).from_pretrained(str(path), local_files_only=True, **safe_kwargs,
                                                       **_pipeline_kwargs(family), **absent_components(path))
        return pipe, family
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES or suffix == ".safetensors":
        if suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise ModelLoadError(
                f"{path.name} is a pickle checkpoint, which can run arbitrary code; convert it to .safetensors or pass --allow-pickle if you trust it"
            )
        if not path.exists():
            raise ModelLoadError(f"model file {path} does not exist")
        from_keys = checkpoint_family(path) if suffix == ".safetensors" else None
        family = config_family(config) if config else (from_keys or "sd")
        if from_keys is not None and from_keys != family:
            raise ModelLoadError(f"{path.name} is an {from_keys.upper()} checkpoint but {{field}} {config} describes an "
                                 f"{family.upper()} model; pass the config folder of the checkpoint's own family",
                                 field="model_config", value=config)
        local = {"local_files_only": True} if config is not None and suffix == ".safetensors" else {}
        pipe = _pipeline_class(family).from_single_file(str(path), config=config, **local, **_pipeline_kwargs(family))
        return pipe, family
    if path.exists():
        raise ModelLoadError(f"{path} is neither a diffusers folder nor a .safetensors checkpoint")
    if model.count("/") != 1 or model.startswith((".", "/")):
        raise ModelLoadError(f"model {model!r} not found: give a hub id (owner/name), a local folder, a .safetensors file, 'toy' or 'toy-flow'")
    index = DiffusionPipeline.load_config(model)
    family = family_of_class(str(index.get("_class_name", "")), model)
    return _pipeline_class(family).from_pretrained(model, **safe_kwargs, **_pipeline_kwargs(family)), family


def config_family(config: str) -> str:
    """The family a ``--model-config`` folder (or hub id) describes."""
    path = Path(config)
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise ModelLoadError(f"--model-config {config} has no model_index.json; pass the config folder of a "
                                 "diffusers model (save_pretrained, weights not needed)", field="model_config")
        return folder_family(path)
    from diffusers import DiffusionPipeline

    return family_of_class(str(DiffusionPipeline.load_config(config).get("_class_name", "")), config)


def check_model_folder(path: Path, allow_pickle: bool = False, family: str = "sd") -> None:
    """Check a diffusers folder before loading: every component sub-folder is there, and its
    weights are safetensors unless ``allow_pickle``.

    Raises:
        ModelLoadError: naming the missing sub-folder, or the pickle weights and how to proceed.
    """
    _, weights = FAMILIES[family]
    needed = weights + tuple(name.replace("text_encoder", "tokenizer") for name in weights if "text_encoder" in name)
    needed += ("scheduler",)
    missing = [name for name in needed if not (path / name).is_dir()]
    if missing:
        names = ", ".join(f"{name}/" for name in missing)
        raise ModelLoadError(f"model folder {path} has no {names} sub-folder; {FAMILY_NAMES[family]} folder needs "
                             f"{', '.join(f'{n}/' for n in needed)} (copy the whole save_pretrained folder)")
    if allow_pickle:
        return
    for name in weights + tuple(name for name in OPTIONAL_WEIGHT_FOLDERS if (path / name).is_dir()):
        files = [item for item in (path / name).iterdir() if item.is_file()]
        if any(item.suffix == ".safetensors" for item in files):
            continue
        pickles = [item.name for item in files if item.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            raise ModelLoadError(f"{path / name} has pickle weights ({pickles[0]}), which can run arbitrary code when loaded; "
                                 "convert the model to safetensors or pass --allow-pickle if you trust it")


def model_reference(model: str) -> str:
    """What a trajectory stores to find the model again: ``toy`` / ``toy-flow``, an absolute path, or the hub id."""
    if model in TOY_ALIASES:
        return "toy" if TOY_MODELS[model] == TOY_MODELS["toy"] else model
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def load_model(
    model: str = "toy",
    device: str = "auto",
    dtype: str = "auto",
    allow_pickle: bool = False,
    config: str | None = None,
    loras: Sequence[str | LoraSpec] = (),
    memory: MemoryOptions = MemoryOptions(),
) -> "EditModel":
    """Load a model of a supported family for editing (SD 1.x/2.x, SDXL, SD3/3.5, FLUX.1, FLUX.2 [klein]).

    Args:
        model: hub id, local diffusers folder, ``.safetensors`` file, or ``toy``.
        device: ``auto`` (cuda → mps → cpu), or an explicit torch device.
        dtype: ``auto``, ``fp32``, ``fp16`` or ``bf16``.
        allow_pickle: permit ``.ckpt``/``.bin``/``.pt`` checkpoints (they can run code).
        config: local config folder (or hub id) for a single-file checkpoint.
        loras: LoRA files (``FILE`` or ``FILE:SCALE`` strings, or :class:`LoraSpec`) fused into the
            weights in this order.
        memory: VAE tiling/slicing and model CPU offload (see :class:`MemoryOptions`).

    Raises:
        ModelLoadError: with a one-line hint when the model cannot be found or loaded, or is of a
            family ddim-edit does not run (SD3, FLUX, …).
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    specs = [spec if isinstance(spec, LoraSpec) else parse_lora(spec) for spec in loras]
    if specs:
        check_peft()
    try:
        pipe, family = _load_pipeline(model, allow_pickle, config)
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers / hub errors: keep one line, say how to fix
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not load model {model!r} ({first}); check the id or path, or pass a local folder when offline"
        ) from exc
    check_latent_unet(pipe, model)
    apply_loras(pipe, specs)
    edit_model = EditModel.from_pipeline(pipe, name=model_reference(model), device=dev, dtype=torch_dtype,
                                         memory=memory)
    edit_model.config_reference = None if config is None else model_reference(config)
    edit_model.loras = lora_records(specs)
    return edit_model


def check_latent_unet(pipe, model: str) -> None:
    """Refuse UNets that take more than the latent (inpainting UNets take latent + mask + masked image);
    the flow families' variants of that kind are pipelines of their own, refused by family."""
    if not hasattr(pipe, "unet"):
        return
    in_channels = int(pipe.unet.config.in_channels)
    latent_channels = int(pipe.vae.config.latent_channels)
    if in_channels != latent_channels:
        raise ModelLoadError(f"{model} has a UNet with {in_channels} input channels (an inpainting or depth model); "
                             f"ddim-edit inverts text-to-image models whose UNet takes the {latent_channels}-channel "
                             "latent: use the base model (ddim-edit inpaints any model by mask blending)", field="model")


@dataclass
class EditModel:
    """The model adapter of the UNet families, Stable Diffusion 1.x/2.x and XL: the pipeline's
    components and what the engine asks of a model (text encoding, the guided denoiser, the VAE,
    attention sites, the stepper). The flow families' adapters subclass it
    (:mod:`ddim_edit.flow_model`: SD3, FLUX.1, FLUX.2 [klein]).

    Attributes:
        denoiser: the network the stepper integrates (here the UNet; a transformer for the flow families).
        family: a key of :data:`FAMILIES` (``sd`` or ``sdxl`` here).
        tokenizer_2, text_encoder_2: SDXL's second tokenizer and text encoder (None for SD).
        force_zeros_for_empty_prompt: SDXL: an empty negative prompt is all zeros.
        config_reference: the ``--model-config`` a single-file model was loaded with.
        loras: the fused LoRAs (file name, SHA-256, scale), as trajectories record them.
    """

    denoiser: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    name: str
    device: torch.device
    dtype: torch.dtype
    family: str = "sd"
    tokenizer_2: Any = None
    text_encoder_2: Any = None
    force_zeros_for_empty_prompt: bool = False
    config_reference: str | None = None
    loras: list = field(default_factory=list)
    unet_evaluations: int = 0
    _prompt_cache: "OrderedDict[str, dict]" = field(default_factory=OrderedDict, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)
    _signature: list | None = field(default=None, repr=False)

    PROMPT_CACHE_SIZE = 256

    @classmethod
    def from_pipeline(cls, pipe, name: str = "custom", device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32, memory: MemoryOptions = MemoryOptions()) -> "EditModel":
        """Wrap a diffusers pipeline of a supported family in its family's adapter, moved to ``device``/``dtype``.

        The VAE stays in float32 under fp16 when its config asks for it (``force_upcast``, SDXL's
        VAE overflows in fp16) and for SD 1.x/2.x VAEs, whose fp16 decodes overflow on real weights.
        """
        device = torch.device(device)
        family = family_of_class(type(pipe).__name__, name)
        adapter = adapter_class(family)
        denoiser = getattr(pipe, adapter.DENOISER)
        encoders = [getattr(pipe, part) for part in TEXT_ENCODERS if getattr(pipe, part, None) is not None]
        # With CPU offload the weights stay on the CPU (the hooks move each module when it runs):
        # moving the whole model to the GPU first would need the memory offload is there to save.
        home = torch.device("cpu") if memory.cpu_offload and device.type != "cpu" else device
        denoiser.to(device=home, dtype=dtype).eval()
        for encoder in encoders:
            encoder.to(device=home, dtype=dtype).eval()
        upcast = dtype == torch.float16 and bool(getattr(pipe.vae.config, "force_upcast", True))
        pipe.vae.to(device=home, dtype=torch.float32 if upcast else dtype).eval()
        for module in [denoiser, pipe.vae] + encoders:
            module.requires_grad_(False)
        apply_memory_options(encoders + [denoiser, pipe.vae], pipe.vae, device, memory)
        return adapter.wrap(pipe, name, device, dtype, family)

    DENOISER = "unet"
    """The pipeline's name for the denoiser (``unet``; ``transformer`` for the flow families)."""

    @classmethod
    def wrap(cls, pipe, name: str, device: torch.device, dtype: torch.dtype, family: str) -> "EditModel":
        """The adapter over ``pipe``'s components, already placed by :meth:`from_pipeline`."""
        zeros = bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False)) if family == "sdxl" else False
        return cls(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config), name, device,
                   dtype, family=family, tokenizer_2=getattr(pipe, "tokenizer_2", None),
                   text_encoder_2=getattr(pipe, "text_encoder_2", None), force_zeros_for_empty_prompt=zeros)

    # ------------------------------------------------------------------ the stepper
    DEFAULT_GUIDANCE = 7.5
    """The guidance a job runs at when it names none (the family's pipeline's default)."""
    EMBEDDED_GUIDANCE = False
    """Whether guidance is a model input (FLUX's guidance embedding) instead of classifier-free guidance."""

    @property
    def classifier_free(self) -> bool:
        """Whether a guidance above 1 runs classifier-free guidance (not for embedded or distilled guidance)."""
        return not self.EMBEDDED_GUIDANCE

    def make_schedule(self, steps: int | None, spacing: str | None = None, timesteps: Sequence[int] | None = None,
                      image_size: tuple[int, int] | None = None) -> Schedule:
        """The stepper for ``steps`` with ``spacing`` or a custom ``timesteps`` list (DDIM on the model's ᾱ)."""
        return Schedule.from_scheduler_config(self.scheduler_config, num_steps=steps, spacing=spacing,
                                              timesteps=timesteps)

    def recorded_schedule(self, schedule: dict, timesteps: Sequence[int]) -> Schedule:
        """The stepper a trajectory recorded (its ``schedule`` metadata and timesteps), on this model."""
        return Schedule.from_scheduler_config(self.scheduler_config, timesteps=timesteps)

    # ------------------------------------------------------------------ sizes
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        """Channels of the latents the denoiser works on (and trajectories store)."""
        return int(self.vae.config.latent_channels)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this for the VAE and the UNet's down blocks."""
        return self.vae_scale_factor * 2 ** (len(self.denoiser.config.down_block_types) - 1)

    @property
    def native_size(self) -> int:
        return int(self.denoiser.config.sample_size) * self.vae_scale_factor

    def components(self) -> dict[str, torch.nn.Module]:
        """The weight-bearing components by their pipeline names."""
        parts = {"unet": self.denoiser, "vae": self.vae, "text_encoder": self.text_encoder}
        if self.text_encoder_2 is not None:
            parts["text_encoder_2"] = self.text_encoder_2
        return parts

    def fingerprint(self) -> str:
        """The architecture: a hash of every component's config and parameter shapes.

        The same in any dtype on any device; :meth:`signature` tells weights apart.
        """
        if self._fingerprint is None:
            self._fingerprint = architecture_fingerprint(self.components())
        return self._fingerprint

    def signature(self) -> list[float]:
        """The weights: per-block statistics and samples (see :mod:`ddim_edit.fingerprint`)."""
        if self._signature is None:
            self._signature = weight_signature(self.components())
        return self._signature

    # ------------------------------------------------------------------ text
    def default_image_size(self) -> tuple[int, int]:
        """(height, width) in pixels the model generates by default."""
        return (self.native_size, self.native_size)

    def image_size(self, latents: torch.Tensor) -> tuple[int, int]:
        """(height, width) in pixels of the image ``latents`` ([…, C, h, w]) decode to."""
        return (int(latents.shape[-2]) * self.vae_scale_factor, int(latents.shape[-1]) * self.vae_scale_factor)

    def _text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Per-prompt text tensors (cached, at most ``PROMPT_CACHE_SIZE`` prompts, least recently used out)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        for prompt in missing:
            self.check_prompt_length(prompt)
        if missing:
            encoded = self.encode_text(missing)
            for row, prompt in enumerate(missing):
                self._prompt_cache[prompt] = {name: value[row].to(self.dtype) for name, value in encoded.items()}
        for prompt in prompts:
            self._prompt_cache.move_to_end(prompt)
        while len(self._prompt_cache) > max(self.PROMPT_CACHE_SIZE, len(set(prompts))):
            self._prompt_cache.popitem(last=False)
        return {name: torch.stack([self._prompt_cache[p][name] for p in prompts])
                for name in self._prompt_cache[prompts[0]]}

    def encode_text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The text encoders' outputs for ``prompts``: name → [B, …] (``hidden``, and SDXL's ``text_embeds``)."""
        if self.family == "sdxl":
            return encode_sdxl((self.tokenizer, self.tokenizer_2), (self.text_encoder, self.text_encoder_2), prompts,
                               self.device)
        return encode_sd(self.tokenizer, self.text_encoder, prompts, self.device)

    def _embeds(self, text: dict[str, torch.Tensor], image_size: tuple[int, int] | None) -> PromptEmbeds:
        added = {}
        if self.family == "sdxl":
            rows = text["hidden"].shape[0]
            added = {"text_embeds": text["text_embeds"],
                     "time_ids": sdxl_time_ids(image_size or self.default_image_size(), rows, self.device).to(self.dtype)}
        return PromptEmbeds(text["hidden"], added)

    def encode(self, prompts: list[str], image_size: tuple[int, int] | None = None) -> PromptEmbeds:
        """The conditioning of ``prompts``, one row each, for images of ``image_size`` (h, w) pixels.

        Text encodings are cached per prompt string; ``image_size`` only matters for SDXL's size
        conditioning (default: the model's native size).
        """
        return self._embeds(self._text(list(prompts)), image_size)

    def encode_negative(self, prompts: list[str], image_size: tuple[int, int] | None = None) -> PromptEmbeds:
        """Like :meth:`encode`, for negative prompts: with ``force_zeros_for_empty_prompt`` (SDXL)
        an empty negative prompt is all zeros, as ``StableDiffusionXLPipeline`` without one."""
        embeds = self.encode(prompts, image_size)
        if not self.force_zeros_for_empty_prompt or all(p for p in prompts):
            return embeds
        keep = torch.tensor([bool(p) for p in prompts], device=self.device)

        def zero(tensor: torch.Tensor) -> torch.Tensor:
            return tensor * keep.view(-1, *([1] * (tensor.ndim - 1))).to(tensor.dtype)

        added = {name: (zero(value) if name == "text_embeds" else value) for name, value in embeds.added.items()}
        return PromptEmbeds(zero(embeds.hidden), added)

    def check_prompt_length(self, prompt: str) -> None:
        """Raise :class:`PromptError` when ``prompt`` has more tokens than the text encoder reads.

        The tokenizer would cut it at ``model_max_length`` (77 for CLIP, start and end included),
        silently dropping the words past the limit (SD3's and FLUX's CLIP too; their T5 reads more).
        """
        limit = int(self.tokenizer.model_max_length)
        count = len(self.tokenizer(prompt, truncation=False, verbose=False).input_ids)
        if count > limit:
            shown = prompt if len(prompt) <= 40 else prompt[:37] + "…"
            raise PromptError(f"the prompt {shown!r} is {count} tokens long (start and end tokens included); the "
                              f"text encoder reads at most {limit}, so the words past that would be dropped: "
                              "shorten it", value=count)

    FIRST_WORD_POSITION = 1
    """Where a prompt's first word piece sits in the encoded text sequence (after CLIP's start token)."""

    @property
    def text_length(self) -> int:
        """The length of the encoded text sequence (the positions cross-attention maps cover)."""
        return int(self.tokenizer.model_max_length)

    def prompt_tokens(self, prompt: str) -> list[str]:
        """The prompt's word pieces in order, without start/end/padding tokens; piece k sits at
        position :attr:`FIRST_WORD_POSITION` + k of the encoded sequence."""
        self.check_prompt_length(prompt)
        ids = self.word_tokenizer(prompt, truncation=True, max_length=self.text_length).input_ids
        return self.word_tokenizer.convert_ids_to_tokens(ids[self.FIRST_WORD_POSITION:-1])

    @property
    def word_tokenizer(self):
        """The tokenizer whose tokens the attention's text positions are (CLIP's; FLUX: T5's)."""
        return self.tokenizer

    # ------------------------------------------------------------------ VAE
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], [B, 3, H, W] → scaled latents z_0 (the posterior mean), float32.

        z_0 stays float32 whatever the model's dtype: inversion works in float64 from it.
        """
        vae_dtype = next(self.vae.parameters()).dtype
        with torch.no_grad():
            dist = self.vae.encode((pixels * 2 - 1).to(self.device, vae_dtype)).latent_dist
        return self.from_vae(dist.mean).float()

    def from_vae(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE's latent → the latents the denoiser works on: (z − shift) · scale."""
        latents = z * self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None)
        if shift:
            latents = latents - shift * self.vae.config.scaling_factor
        return latents

    def to_vae(self, latents: torch.Tensor) -> torch.Tensor:
        """The denoiser's latents → the VAE's latent (the inverse of :meth:`from_vae`)."""
        z = latents / self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None)
        return z + shift if shift else z

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → pixels in [0, 1], float32 on the CPU."""
        vae_dtype = next(self.vae.parameters()).dtype
        z = self.to_vae(latents.to(self.device, vae_dtype))
        if not bool(torch.isfinite(z).all()):
            raise NonFiniteError("the final latents contain NaN or infinite values (numeric overflow, e.g. in fp16 or "
                                 "at extreme guidance); run in float32 or with a lower guidance")
        with torch.no_grad():
            image = self.vae.decode(z).sample
        if not bool(torch.isfinite(image).all()):
            raise NonFiniteError("the decoded image contains NaN or infinite values (VAE overflow, e.g. in fp16); "
                                 "run in float32 or with a lower guidance")
        return ((image.float() + 1) / 2).clamp(0, 1).cpu()

    # ------------------------------------------------------------------ UNet
    def attention_sites(self, roles: tuple[str, ...] = ROLES, stages: tuple[str, ...] = STAGES) -> list[AttentionSite]:
        """The denoiser's attention sites with one of ``roles`` in one of ``stages`` (see :mod:`ddim_edit.attention`)."""
        return attention_sites(self.denoiser, roles, stages)

    def installed_processors(self, processors: dict[str, object]):
        """A context in which the denoiser runs ``processors`` (site name → processor), restored after."""
        return installed_processors(self.denoiser, processors)

    def denoise(
        self,
        latents: torch.Tensor,
        timestep: int,
        cond: PromptEmbeds,
        uncond: PromptEmbeds | None,
        guidance_scale: float,
        attention_kwargs: dict | None = None,
    ) -> torch.Tensor:
        """The guided model output for a batch of branches, classifier-free guidance in one batch.

        Args:
            latents: [B, C, h, w] latents at ``timestep``.
            cond: the conditioning of each branch (B rows, see :meth:`encode`).
            uncond: negative / null conditioning (B rows), or None when ``guidance_scale <= 1``.
            guidance_scale: w; output = u + w (c - u) when w > 1, else the conditional output.
            attention_kwargs: passed to the attention processors (``cross_attention_kwargs``).

        Returns the output in the model's prediction type (guidance applied to it as diffusers does).
        """
        guided = guidance_scale > 1.0 and self.classifier_free
        if guided:
            if uncond is None:
                raise PromptError("guidance > 1 needs negative/null embeddings")
            model_input = torch.cat([latents, latents])
            conditioning = PromptEmbeds.cat([uncond, cond])
        else:
            model_input, conditioning = latents, cond
        self.unet_evaluations += model_input.shape[0]
        output = self.forward(model_input.to(self.dtype), timestep, conditioning.to(self.device, self.dtype),
                              guidance_scale, attention_kwargs)
        if not guided:
            return output
        out_uncond, out_cond = output.chunk(2)
        return out_uncond + guidance_scale * (out_cond - out_uncond)

    def forward(self, latents: torch.Tensor, timestep: float, conditioning: PromptEmbeds, guidance_scale: float,
                attention_kwargs: dict | None) -> torch.Tensor:
        """One call of the denoiser on a batch (``guidance_scale`` matters only with embedded guidance)."""
        t = torch.full((latents.shape[0],), int(timestep), device=self.device, dtype=torch.long)
        return self.denoiser(latents, t, **conditioning.unet_kwargs(), cross_attention_kwargs=attention_kwargs,
                             return_dict=False)[0]

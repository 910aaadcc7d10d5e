"""Loading a Stable Diffusion model and the pieces every edit uses.

:func:`load_model` accepts a hub id, a local diffusers folder, a single ``.safetensors``
checkpoint (with an optional local config folder for offline use) or the alias ``toy`` (the
bundled model in ``assets/toy-model``). :class:`EditModel` holds the components and offers prompt
encoding with a cache, VAE encode/decode and the guided denoiser used by the sampler.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError, NonFiniteError, PromptError

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
TOY_ALIASES = ("toy", "bundled")
PIPELINE_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # what a SD folder must hold
WEIGHT_FOLDERS = ("unet", "vae", "text_encoder")


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


def toy_model_path() -> Path:
    return assets_dir() / "toy-model"


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
    """``auto``: float32 on CPU, float16 on CUDA; fp16/bf16 are refused on the CPU."""
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in names:
        raise ModelLoadError(f"unknown {{field}} {dtype!r}; use auto, fp32, fp16 or bf16", field="dtype", value=dtype)
    chosen = names[dtype]
    if device.type == "cpu" and chosen != torch.float32:
        raise ModelLoadError(f"{{field}} {dtype} is for GPUs; use {{field}} fp32 on the CPU", field="dtype", value=dtype)
    return chosen


def _load_pipeline(model: str, allow_pickle: bool, config: str | None):
    from diffusers import StableDiffusionPipeline

    kwargs = dict(safety_checker=None, requires_safety_checker=False)
    # Without --allow-pickle only safetensors weights are read: a folder or hub repo with .bin
    # pickles fails instead of running their code.
    safe_kwargs = {} if allow_pickle else {"use_safetensors": True}
    path = Path(model)
    if model in TOY_ALIASES:
        path = toy_model_path()
        if not (path / "model_index.json").exists():
            raise ModelLoadError(f"the bundled toy model is missing at {path}; reinstall ddim-edit from a full checkout")
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise ModelLoadError(f"{path} is not a diffusers model folder (no model_index.json); pass a folder saved with save_pretrained")
        check_model_folder(path, allow_pickle)
        return StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True, **safe_kwargs, **kwargs)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelLoadError(
                f"{path.name} is a pickle checkpoint, which can run arbitrary code; convert it to .safetensors or pass --allow-pickle if you trust it"
            )
        if not path.exists():
            raise ModelLoadError(f"model file {path} does not exist")
        return StableDiffusionPipeline.from_single_file(str(path), config=config, **kwargs)
    if suffix == ".safetensors":
        if not path.exists():
            raise ModelLoadError(f"model file {path} does not exist")
        return StableDiffusionPipeline.from_single_file(str(path), config=config, local_files_only=config is not None, **kwargs)
    if path.exists():
        raise ModelLoadError(f"{path} is neither a diffusers folder nor a .safetensors checkpoint")
    if model.count("/") != 1 or model.startswith((".", "/")):
        raise ModelLoadError(f"model {model!r} not found: give a hub id (owner/name), a local folder, a .safetensors file or 'toy'")
    return StableDiffusionPipeline.from_pretrained(model, **safe_kwargs, **kwargs)


def check_model_folder(path: Path, allow_pickle: bool = False) -> None:
    """Check a diffusers folder before loading: every component sub-folder is there, and its
    weights are safetensors unless ``allow_pickle``.

    Raises:
        ModelLoadError: naming the missing sub-folder, or the pickle weights and how to proceed.
    """
    missing = [name for name in PIPELINE_FOLDERS if not (path / name).is_dir()]
    if missing:
        names = ", ".join(f"{name}/" for name in missing)
        raise ModelLoadError(f"model folder {path} has no {names} sub-folder; a Stable Diffusion folder needs "
                             f"{', '.join(f'{n}/' for n in PIPELINE_FOLDERS)} (copy the whole save_pretrained folder)")
    if allow_pickle:
        return
    for name in WEIGHT_FOLDERS:
        files = [item for item in (path / name).iterdir() if item.is_file()]
        if any(item.suffix == ".safetensors" for item in files):
            continue
        pickles = [item.name for item in files if item.suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            raise ModelLoadError(f"{path / name} has pickle weights ({pickles[0]}), which can run arbitrary code when loaded; "
                                 "convert the model to safetensors or pass --allow-pickle if you trust it")


def load_model(
    model: str = "toy",
    device: str = "auto",
    dtype: str = "auto",
    allow_pickle: bool = False,
    config: str | None = None,
) -> "EditModel":
    """Load a Stable Diffusion 1.x/2.x model for editing.

    Args:
        model: hub id, local diffusers folder, ``.safetensors`` file, or ``toy``.
        device: ``auto`` (cuda → mps → cpu), or an explicit torch device.
        dtype: ``auto``, ``fp32``, ``fp16`` or ``bf16``.
        allow_pickle: permit ``.ckpt``/``.bin``/``.pt`` checkpoints (they can run code).
        config: local config folder (or hub id) for a single-file checkpoint.

    Raises:
        ModelLoadError: with a one-line hint when the model cannot be found or loaded.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        pipe = _load_pipeline(model, allow_pickle, config)
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers / hub errors: keep one line, say how to fix
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not load model {model!r} ({first}); check the id or path, or pass a local folder when offline"
        ) from exc
    identity = "toy" if model in TOY_ALIASES else model
    return EditModel.from_pipeline(pipe, name=identity, device=dev, dtype=torch_dtype)


@dataclass
class EditModel:
    """The components of a Stable Diffusion pipeline plus the helpers edits need."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    name: str
    device: torch.device
    dtype: torch.dtype
    unet_evaluations: int = 0
    _prompt_cache: dict = field(default_factory=dict, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    @classmethod
    def from_pipeline(cls, pipe, name: str = "custom", device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> "EditModel":
        device = torch.device(device)
        pipe.unet.to(device=device, dtype=dtype).eval()
        pipe.text_encoder.to(device=device, dtype=dtype).eval()
        # fp16 VAE decodes overflow to NaN on SD weights: keep the VAE in float32 then.
        vae_dtype = torch.float32 if dtype == torch.float16 else dtype
        pipe.vae.to(device=device, dtype=vae_dtype).eval()
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False)
        return cls(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer,
                   dict(pipe.scheduler.config), name, device, dtype)

    # ------------------------------------------------------------------ sizes
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this for the VAE and the UNet's down blocks."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.down_block_types) - 1)

    @property
    def native_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def fingerprint(self) -> str:
        """A hash of the UNet config and a few weights: differs between models."""
        if self._fingerprint is None:
            # Private keys (_name_or_path, _diffusers_version, …) are bookkeeping that saving and
            # loading change; the architecture and the weights are what identify a model.
            config = {k: v for k, v in dict(self.unet.config).items() if not k.startswith("_")}
            digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
            for tensor in (self.unet.conv_in.weight, self.unet.conv_out.weight):
                digest.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    # ------------------------------------------------------------------ text
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings [len(prompts), L, D] (cached per prompt string)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            ids = self.tokenize(missing)
            with torch.no_grad():
                hidden = self.text_encoder(ids.to(self.device))[0]
            for prompt, embedding in zip(missing, hidden):
                self._prompt_cache[prompt] = embedding.to(self.dtype)
        return torch.stack([self._prompt_cache[p] for p in prompts])

    def check_prompt_length(self, prompt: str) -> None:
        """Raise :class:`PromptError` when ``prompt`` has more tokens than the text encoder reads.

        The tokenizer would cut it at ``model_max_length`` (77 for CLIP, start and end included),
        silently dropping the words past the limit.
        """
        limit = int(self.tokenizer.model_max_length)
        count = len(self.tokenizer(prompt, truncation=False, verbose=False).input_ids)
        if count > limit:
            shown = prompt if len(prompt) <= 40 else prompt[:37] + "…"
            raise PromptError(f"the prompt {shown!r} is {count} tokens long (start and end tokens included); the "
                              f"text encoder reads at most {limit}, so the words past that would be dropped: "
                              "shorten it", value=count)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids [len(prompts), model_max_length]; a prompt over the limit raises :class:`PromptError`."""
        for prompt in prompts:
            self.check_prompt_length(prompt)
        return self.tokenizer(
            prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        ).input_ids

    def prompt_tokens(self, prompt: str) -> list[str]:
        """The prompt's word pieces in order, without start/end/padding tokens."""
        self.check_prompt_length(prompt)
        ids = self.tokenizer(prompt, truncation=True, max_length=self.tokenizer.model_max_length).input_ids
        return self.tokenizer.convert_ids_to_tokens(ids[1:-1])

    # ------------------------------------------------------------------ VAE
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], [B, 3, H, W] → scaled latents z_0 (the posterior mean)."""
        vae_dtype = next(self.vae.parameters()).dtype
        with torch.no_grad():
            dist = self.vae.encode((pixels * 2 - 1).to(self.device, vae_dtype)).latent_dist
        latents = dist.mean * self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None)
        if shift:
            latents = latents - shift * self.vae.config.scaling_factor
        return latents.to(self.dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → pixels in [0, 1], float32 on the CPU."""
        vae_dtype = next(self.vae.parameters()).dtype
        z = latents.to(self.device, vae_dtype) / self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None)
        if shift:
            z = z + shift
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
    def denoise(
        self,
        latents: torch.Tensor,
        timestep: int,
        cond: torch.Tensor,
        uncond: torch.Tensor | None,
        guidance_scale: float,
        attention_kwargs: dict | None = None,
    ) -> torch.Tensor:
        """The guided model output for a batch of branches, classifier-free guidance in one batch.

        Args:
            latents: [B, C, h, w] latents at ``timestep``.
            cond: [B, L, D] prompt embeddings per branch.
            uncond: [B, L, D] negative / null embeddings, or None when ``guidance_scale <= 1``.
            guidance_scale: w; output = u + w (c - u) when w > 1, else the conditional output.
            attention_kwargs: passed to the attention processors (``cross_attention_kwargs``).

        Returns the output in the model's prediction type (guidance applied to it as diffusers does).
        """
        guided = guidance_scale > 1.0
        if guided:
            if uncond is None:
                raise PromptError("guidance > 1 needs negative/null embeddings")
            model_input = torch.cat([latents, latents])
            embeddings = torch.cat([uncond, cond])
        else:
            model_input, embeddings = latents, cond
        t = torch.full((model_input.shape[0],), int(timestep), device=self.device, dtype=torch.long)
        self.unet_evaluations += model_input.shape[0]
        output = self.unet(
            model_input.to(self.dtype), t, encoder_hidden_states=embeddings.to(self.dtype),
            cross_attention_kwargs=attention_kwargs, return_dict=False,
        )[0]
        if not guided:
            return output
        out_uncond, out_cond = output.chunk(2)
        return out_uncond + guidance_scale * (out_cond - out_uncond)

"""Which model a trajectory was made with, independently of dtype and device.

A trajectory made in fp16 on a GPU must replay in fp32 on a CPU, so nothing here hashes weight
bytes (fp16 and bf16 round them differently). Two parts:

- :func:`architecture_fingerprint`: a hash of every component's config (bookkeeping keys dropped)
  and every parameter's name and shape: exact, the same in any dtype on any device.
- :func:`weight_signature`: per block of every component (UNet down/mid/up blocks, VAE encoder
  and decoder, text encoder layers, …) the mean |w| and mean w², and a few sampled weights. Compared
  with a relative tolerance (:func:`signatures_match`) wide enough for fp16/bf16 rounding and
  narrow enough for other weights (another checkpoint, a fine-tune, a fused LoRA).
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping

import torch

SAMPLES_PER_BLOCK = 4
RELATIVE_TOLERANCE = 1e-2  # bf16 keeps 8 significant bits: ≤ 0.4 % per weight
ABSOLUTE_TOLERANCE = 1e-4


def _public_config(module) -> dict:
    config = getattr(module, "config", None)
    if config is None:
        return {}
    items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    bookkeeping = ("architectures", "dtype", "torch_dtype", "transformers_version", "_name_or_path")
    return {k: v for k, v in items.items() if not k.startswith("_") and k not in bookkeeping}


def architecture_fingerprint(components: Mapping[str, torch.nn.Module]) -> str:
    """16 hex digits over the components' configs and parameter shapes."""
    digest = hashlib.sha256()
    for name in sorted(components):
        module = components[name]
        digest.update(f"\0{name}\0".encode())
        digest.update(json.dumps(_public_config(module), sort_keys=True, default=str).encode())
        for param_name, param in module.named_parameters():
            digest.update(f"{param_name}:{tuple(param.shape)};".encode())
    return digest.hexdigest()[:16]


def block_name(param_name: str) -> str:
    """The block a parameter belongs to: its name up to the first index (``down_blocks.0``,
    ``text_model.encoder.layers.3``), else its first two parts (``text_model.embeddings``)."""
    parts = param_name.split(".")[:-1] or param_name.split(".")
    for position, part in enumerate(parts[:4]):
        if part.isdigit():
            return ".".join(parts[:position + 1])
    return ".".join(parts[:2])


def parameter_blocks(module: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """A module's parameters grouped by :func:`block_name`, in parameter order."""
    blocks: dict[str, list[torch.Tensor]] = {}
    for name, param in module.named_parameters():
        if param.numel():
            blocks.setdefault(block_name(name), []).append(param)
    return blocks


def weight_signature(components: Mapping[str, torch.nn.Module]) -> list[float]:
    """Per block: mean |w|, mean w² and ``SAMPLES_PER_BLOCK`` weights of its largest tensor."""
    signature: list[float] = []
    with torch.no_grad():
        for name in sorted(components):
            for params in parameter_blocks(components[name]).values():
                count = sum(p.numel() for p in params)
                abs_sum = sq_sum = 0.0
                for param in params:  # one float copy per tensor at a time
                    values = param.detach().float()
                    abs_sum += float(values.abs().sum())
                    sq_sum += float(values.square().sum())
                largest = max(params, key=lambda p: p.numel()).detach().reshape(-1)
                picks = [(k * 7919 + 1) % largest.numel() for k in range(SAMPLES_PER_BLOCK)]
                signature += [abs_sum / count, sq_sum / count] + [float(largest[i].float()) for i in picks]
    return signature


def signatures_match(recorded: list[float], current: list[float]) -> bool:
    """Whether two weight signatures come from the same weights (up to fp16/bf16 rounding)."""
    if len(recorded) != len(current):
        return False
    a = torch.tensor(recorded, dtype=torch.float64)
    b = torch.tensor(current, dtype=torch.float64)
    return bool(torch.allclose(a, b, rtol=RELATIVE_TOLERANCE, atol=ABSOLUTE_TOLERANCE))


def legacy_fingerprint(unet) -> str:
    """The fingerprint format versions 1–2 stored: UNet config and conv_in/conv_out weight bytes (fp32)."""
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for tensor in (unet.conv_in.weight, unet.conv_out.weight):
        digest.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]

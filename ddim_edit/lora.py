"""LoRA weights on top of a model: ``--lora FILE[:SCALE]``, loaded with diffusers' LoRA loader.

Every LoRA is loaded as a named adapter (``load_lora_weights``, PEFT backend), the adapters are
weighted by their scales (``set_adapters``), fused into the base weights (``fuse_lora``) and the
adapter layers removed. The attention processors that edits install then see plain fused
projections, at no extra cost per step. A trajectory records each LoRA's file name, SHA-256 and
scale (:func:`lora_records`), and replaying it with other LoRAs is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import ModelLoadError
from .io import file_sha256


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA file and the scale its weights are fused with."""

    path: Path
    scale: float = 1.0


def parse_lora(text: str) -> LoraSpec:
    """``FILE`` or ``FILE:SCALE`` (the scale must be a finite number; a path may hold colons).

    Raises:
        ModelLoadError: (field ``lora``) for a missing file, a pickle or a bad scale.
    """
    path_text, scale = str(text), 1.0
    head, sep, tail = path_text.rpartition(":")
    if sep and head and not Path(path_text).exists():
        try:
            scale = float(tail)
        except ValueError:
            raise ModelLoadError(f"{{field}} {text!r}: the scale after ':' must be a number, e.g. {{field}} "
                                 f"{head}:0.8", field="lora", value=text) from None
        path_text = head
    if not math.isfinite(scale):
        raise ModelLoadError(f"{{field}} {text!r}: the scale must be a finite number", field="lora", value=text)
    path = Path(path_text)
    if not path.is_file():
        raise ModelLoadError(f"{{field}} file {path} does not exist; give a LoRA .safetensors file", field="lora",
                             value=text)
    if path.suffix.lower() != ".safetensors":
        raise ModelLoadError(f"{{field}} {path.name} is not a .safetensors file; convert it (pickled LoRAs can run "
                             "code when loaded)", field="lora", value=text)
    return LoraSpec(path, scale)


def lora_records(specs: Sequence[LoraSpec]) -> list[dict]:
    """What a trajectory stores about the LoRAs, in load order: file name, absolute path (to say
    what to pass again), SHA-256 (what is compared) and scale."""
    return [{"file": spec.path.name, "path": str(spec.path.resolve()), "sha256": file_sha256(spec.path),
             "scale": float(spec.scale)} for spec in specs]


def check_peft() -> None:
    """LoRAs load through PEFT, a dependency of ddim-edit: a one-line error when it is missing anyway."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ModelLoadError("{field} needs the peft package, which is not installed; run: pip install 'peft>=0.10' "
                             "(or reinstall ddim-edit, which depends on it)", field="lora") from None


def apply_loras(pipe, specs: Sequence[LoraSpec]) -> None:
    """Load, weight and fuse the LoRAs into ``pipe``'s UNet and text encoder(s).

    Raises:
        ModelLoadError: (field ``lora``) when a file is no LoRA for this model.
    """
    if not specs:
        return
    names = []
    for index, spec in enumerate(specs):
        name = f"lora{index}"
        try:
            pipe.load_lora_weights(str(spec.path), adapter_name=name)
        except Exception as exc:  # diffusers/peft errors: keep one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise ModelLoadError(f"{{field}} {spec.path.name} could not be loaded into this model ({first}); "
                                 "check that it was trained for this model family", field="lora",
                                 value=str(spec.path)) from exc
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[spec.scale for spec in specs])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()


def check_lora_records(recorded: list[dict] | None, current: list[dict]) -> str | None:
    """None when a trajectory's LoRAs are the loaded ones, else what differs (for the error)."""
    recorded = recorded or []

    def key(records: list[dict]) -> list[tuple]:
        return [(r["sha256"], round(float(r["scale"]), 6)) for r in records]

    def describe(records: list[dict]) -> str:
        return ", ".join(f"{r['file']}:{r['scale']:g}" for r in records) or "no LoRA"

    if key(recorded) == key(current):
        return None
    if recorded and all(r.get("path") for r in recorded):
        flags = " ".join(f"{{field}} {r['path']}:{r['scale']:g}" for r in recorded)  # {field}: the flag
        return (f"it was made with {describe(recorded)}, the loaded model has {describe(current)} "
                f"(pass {flags})")

    return f"it was made with {describe(recorded)}, the loaded model has {describe(current)}"

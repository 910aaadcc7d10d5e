"""The Trajectory record (z_T … z_0 of one inverted image) and its safetensors file format.

Latents are stored in *sampling order*: ``latents[i]`` is the latent at ``timesteps[i]``
(so ``latents[0]`` is x_T) and ``latents[N]`` is z_0. Sampling step ``i`` maps ``latents[i]``
to ``latents[i + 1]``. Method-specific per-step data:

- ``corrections`` [N, C, h, w] (``exact``): added after sampling step i so that the guided
  sampler reproduces ``latents[i + 1]``;
- ``null_embeddings`` [N, L, D] (``null-text``): the optimised unconditional embedding per step.

The file is safetensors; the JSON metadata sits under the key ``ddim_edit``. Latents and
corrections are kept in float64 (the sampler's working precision), so a replay from the file is
as exact as one from memory.

``save(..., storage="float16")`` writes a smaller file (:data:`STORAGES`): x_T and z_0 stay float64
(``latents.ends``), the intermediate latents z_1 … z_{N-1} are float16 (``latents.middle``) and the
corrections float32; the metadata says ``"storage": "float16"`` and loading gives float64 tensors
again. A replay reads only x_T and the corrections (an ``exact`` file without corrections records
them from the latents, and still lands on z_0, which is float64), so reconstruction stays exact to
float32 rounding; the edits that read the intermediate latents (the swap's known source branch,
style's content and style branches, inpainting's known region) see them rounded to float16.
Float16 files have no ``latents`` tensor, so a ddim-edit older than this option refuses them
instead of replaying rounded latents.

Model identity (format version 3): the architecture fingerprint, a dtype-independent weight
signature, the family, the resolved model reference and ``--model-config``, and the fused LoRAs
(file, SHA-256, scale); see :func:`check_compatible`.

Integrity (format version 2 and later): the header also holds ``ddim_edit.sha256``, a SHA-256 over the
canonical JSON metadata and every tensor (name, dtype, shape, bytes); loading recomputes it, so a
hand-edited prompt, method, guidance or latent is reported instead of silently replayed. It guards
against accidents and hand edits, not against someone who recomputes it. Loading also validates
every metadata field (:data:`METADATA_SCHEMA`) and refuses NaN/infinite tensors. Version 1 files
(no checksum) are still read, with the same schema and finiteness checks.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .families import FAMILY_NAMES
from .flow_schedule import FLOW_STEPPER
from .errors import DdimEditError, NonFiniteError, TrajectoryError
from .io import atomic_write

FORMAT_VERSION = 3
METHODS = ("ddim", "fixed-point", "negative-prompt", "null-text", "exact")  # inversion methods a file may record
READABLE_VERSIONS = (1, 2, 3)  # 1: no checksum; 1–2: weight-byte model fingerprint, no LoRAs
METADATA_KEY = "ddim_edit"
CHECKSUM_KEY = "ddim_edit.sha256"
REQUIRED_METADATA = ("format_version", "model", "model_fingerprint", "schedule", "prompt", "method", "guidance_scale")
STORAGES = ("float64", "float16")  # how save() stores the latents (see the module docstring)


@dataclass
class Trajectory:
    """An inverted image: its timesteps, latents z_T … z_0, per-step data and metadata."""

    timesteps: tuple[int, ...] | tuple[float, ...]
    latents: torch.Tensor
    metadata: dict[str, Any]
    corrections: torch.Tensor | None = None
    null_embeddings: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind = float if is_flow(self.metadata) else int  # DDIM's timesteps are integers, a flow's σ·T are not
        self.timesteps = tuple(kind(t) for t in self.timesteps)
        validate_shapes(self)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def method(self) -> str:
        return self.metadata["method"]

    @property
    def x_T(self) -> torch.Tensor:  # noqa: N802 (the paper's name)
        """The inverted noise latent at ``timesteps[0]``, [C, h, w]."""
        return self.latents[0]

    @property
    def z_0(self) -> torch.Tensor:
        """The clean latent of the source image, [C, h, w]."""
        return self.latents[-1]

    def save(self, path: str | Path, force: bool = False, storage: str = "float64") -> Path:
        """Write the trajectory atomically; refuse to overwrite unless ``force``.

        Args:
            storage: ``float64`` (everything at the sampler's precision) or ``float16``: x_T and z_0
                float64, the intermediate latents float16, the corrections float32 (about 2.5×
                smaller for an ``exact`` trajectory; see the module docstring for what it costs).
        """
        from safetensors.torch import save

        if storage not in STORAGES:
            raise ValueError(f"unknown trajectory storage {storage!r}; choose one of {', '.join(STORAGES)}")
        latents = self.latents.detach().double().contiguous().cpu()
        tensors = {"timesteps": torch.tensor(self.timesteps, dtype=torch.float64 if is_flow(self.metadata) else torch.int64)}
        if storage == "float16":
            tensors["latents.ends"] = torch.stack([latents[0], latents[-1]]).contiguous()
            tensors["latents.middle"] = latents[1:-1].half().contiguous()
        else:
            tensors["latents"] = latents
        if self.corrections is not None:
            corrections = self.corrections.detach().double()
            tensors["corrections"] = (corrections.float() if storage == "float16" else corrections).contiguous().cpu()
        if self.null_embeddings is not None:
            tensors["null_embeddings"] = self.null_embeddings.detach().float().contiguous().cpu()
        for name, tensor in self.extras.items():
            tensors[f"extra.{name}"] = tensor.detach().contiguous().cpu()
        meta = {key: value for key, value in self.metadata.items() if key != "storage"}
        if storage != "float64":
            meta["storage"] = storage
        meta_json = json.dumps(dict(meta, format_version=FORMAT_VERSION), sort_keys=True)
        checksum = content_checksum(json.loads(meta_json), tensors)
        payload = save(tensors, metadata={METADATA_KEY: meta_json, CHECKSUM_KEY: checksum})
        return atomic_write(path, payload, force=force)

    @classmethod
    def load(cls, path: str | Path) -> "Trajectory":
        """Read and validate a trajectory file (format version, metadata and tensor shapes)."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        path = Path(path)
        if not path.is_file():
            raise TrajectoryError(f"trajectory file {path} does not exist; create one with `ddim-edit invert`")
        try:
            raw = path.read_bytes()
            tensors = load(raw)
            header_len = int.from_bytes(raw[:8], "little")
            header_meta = json.loads(raw[8:8 + header_len]).get("__metadata__") or {}
            meta = json.loads(header_meta.get(METADATA_KEY, "null"))
        except (SafetensorError, ValueError, OSError, json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise TrajectoryError(f"{path} is not a readable trajectory file (corrupt or truncated); invert the image again") from exc
        if not isinstance(meta, dict):
            raise TrajectoryError(f"{path} is a safetensors file but not a ddim-edit trajectory (no '{METADATA_KEY}' metadata)")
        version = meta.get("format_version")
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            raise TrajectoryError(
                f"{path} has trajectory format version {version}, this ddim-edit reads version {FORMAT_VERSION}; invert the image again"
            )
        missing = [key for key in REQUIRED_METADATA if key not in meta]
        half = meta.get("storage") == "float16"
        latent_names = ("latents.ends", "latents.middle") if half else ("latents",)
        if missing or "timesteps" not in tensors or any(name not in tensors for name in latent_names):
            raise TrajectoryError(f"{path} lacks {', '.join(missing) or 'tensors'}; invert the image again")
        extras = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
        try:
            validate_metadata(meta)
            validate_tensor_types(tensors, is_flow(meta))
            latents = stored_latents(tensors, half)
            corrections = tensors.get("corrections")
            if corrections is not None and half:
                corrections = corrections.double()
            traj = cls(tuple(tensors["timesteps"].tolist()), latents, meta,
                       corrections, tensors.get("null_embeddings"), extras)
            if traj.latents.shape[1:] != tuple(meta["latent_shape"]):
                raise TrajectoryError(f"metadata field 'latent_shape' is {meta['latent_shape']}, the latents are "
                                      f"{list(traj.latents.shape[1:])}; the file was edited or damaged")
        except DdimEditError as exc:
            hint = "" if "invert" in str(exc) else "; invert the image again"
            raise TrajectoryError(f"{path}: {exc}{hint}") from exc
        if version >= 2:
            stored = header_meta.get(CHECKSUM_KEY)
            if not isinstance(stored, str):
                raise TrajectoryError(f"{path} has no checksum ('{CHECKSUM_KEY}'), which format version {version} "
                                      "always writes; the file was rewritten by other software: invert the image again")
            if stored != content_checksum(meta, tensors):
                raise TrajectoryError(f"{path} was modified after it was written (its checksum does not match its "
                                      "metadata and tensors); invert the image again")
        return traj


def stored_latents(tensors: dict[str, torch.Tensor], half: bool) -> torch.Tensor:
    """The latents [N + 1, C, h, w] as saved: ``latents``, or (float16 storage) ends and middle, float64."""
    if not half:
        return tensors["latents"]
    ends, middle = tensors["latents.ends"], tensors["latents.middle"]
    if ends.ndim != 4 or ends.shape[0] != 2 or middle.ndim != 4 or middle.shape[1:] != ends.shape[1:]:
        raise TrajectoryError(f"float16 latents have shapes {tuple(ends.shape)} (ends) and {tuple(middle.shape)} "
                              "(middle), expected (2, C, h, w) and (N - 1, C, h, w)")
    return torch.cat([ends[:1].double(), middle.double(), ends[1:].double()])


def validate_shapes(traj: Trajectory) -> None:
    """Raise :class:`TrajectoryError` when the tensors do not fit the timestep count, or
    :class:`NonFiniteError` when they hold NaN or infinite values."""
    n = len(traj.timesteps)
    if traj.latents.ndim != 4 or traj.latents.shape[0] != n + 1:
        raise TrajectoryError(f"latents have shape {tuple(traj.latents.shape)}, expected ({n + 1}, C, h, w) for {n} steps")
    if traj.corrections is not None and tuple(traj.corrections.shape) != (n, *traj.latents.shape[1:]):
        raise TrajectoryError(f"corrections have shape {tuple(traj.corrections.shape)}, expected ({n}, {', '.join(map(str, traj.latents.shape[1:]))})")
    if traj.null_embeddings is not None and (traj.null_embeddings.ndim != 3 or traj.null_embeddings.shape[0] != n):
        raise TrajectoryError(f"null embeddings have shape {tuple(traj.null_embeddings.shape)}, expected ({n}, L, D)")
    for name in ("latents", "corrections", "null_embeddings"):
        tensor = getattr(traj, name)
        if tensor is not None and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteError(f"the {name.replace('_', ' ')} contain NaN or infinite values (numeric overflow, e.g. "
                                 "in fp16 or at extreme guidance); invert in float32 or with a lower guidance")
    schedule = traj.metadata.get("schedule") or {}
    if isinstance(schedule, dict) and list(schedule.get("timesteps", traj.timesteps)) != list(traj.timesteps):
        raise TrajectoryError("the metadata's timesteps differ from the stored timesteps tensor")
    # An 'exact' trajectory may lack its corrections (inverted without the record pass): replays
    # record them when they need them (ddim_edit.replay.replay_plan).
    if traj.metadata.get("method") == "null-text" and traj.null_embeddings is None:
        raise TrajectoryError("a 'null-text' trajectory without null embeddings")


def check_compatible(traj: Trajectory, model, schedule=None) -> None:
    """Reject a trajectory made with another model, LoRAs, latent shape or schedule, saying how to fix it.

    The model is recognised by its architecture and weights, not by dtype or device: a trajectory
    made in fp16 on a GPU replays in fp32 on a CPU (see :mod:`ddim_edit.fingerprint`).
    """
    from .fingerprint import legacy_fingerprint, signatures_match
    from .lora import check_lora_records

    meta = traj.metadata
    made_with = meta.get("model")
    version = meta.get("format_version", FORMAT_VERSION)
    if version >= 3:
        same_architecture = meta["model_fingerprint"] == model.fingerprint()
        lora_difference = check_lora_records(meta.get("loras"), list(getattr(model, "loras", [])))
        if same_architecture and lora_difference:
            raise TrajectoryError(f"this trajectory's LoRAs differ from the loaded model's: {lora_difference}; load the "
                                  "same LoRA files and scales, or invert the image again", field="lora")
        same = same_architecture and signatures_match(meta["model_signature"], model.signature())
        recorded_fingerprint = meta["model_fingerprint"]
    else:  # versions 1–2 hashed the UNet config and two weight tensors
        recorded_fingerprint = meta.get("model_fingerprint")
        same = recorded_fingerprint == legacy_fingerprint(model.denoiser)
    if not same:
        family = meta.get("model_family")
        if family and family != model.family:
            raise TrajectoryError(f"this trajectory was made with {FAMILY_NAMES.get(family, family)} model ({made_with!r}), "
                                  f"the loaded {model.name!r} is {FAMILY_NAMES[model.family]} model; pass {{field}} "
                                  f"{made_with}", field="model")
        if made_with == model.name:  # same name, other weights: the folder or repo changed since
            raise TrajectoryError(
                f"this trajectory was made with other weights under the name {made_with!r} (model fingerprint "
                f"{recorded_fingerprint}, the loaded model's is {model.fingerprint()} with other weights); "
                "invert the image again with the loaded model", field="model")
        raise TrajectoryError(
            f"this trajectory was made with model {made_with!r}, not the loaded {model.name!r}; "
            f"pass {{field}} {made_with} or invert the image again with this model", field="model"
        )
    expected_channels = model.latent_channels
    if traj.latents.shape[1] != expected_channels:
        raise TrajectoryError(f"trajectory latents have {traj.latents.shape[1]} channels, the model expects {expected_channels}")
    if schedule is not None:
        check_schedule(traj, schedule)


def check_schedule(traj: Trajectory, schedule) -> None:
    """Reject a trajectory whose recorded stepper differs from ``schedule`` (noise table, timesteps)."""
    stored = traj.metadata["schedule"]
    if stored.get("fingerprint") != schedule.fingerprint() or list(stored["timesteps"]) != list(schedule.timesteps):
        raise TrajectoryError(
            "this trajectory was made with another noise schedule or timestep list; "
            "invert the image again with the same number of steps and spacing"
        )


# ---------------------------------------------------------------------- schema and checksum
def is_flow(meta: dict[str, Any]) -> bool:
    """Whether the metadata records the flow stepper (a trajectory of SD3 or FLUX)."""
    schedule = meta.get("schedule")
    return isinstance(schedule, dict) and schedule.get("stepper") == FLOW_STEPPER


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _int_list(value: Any, length: int | None = None, low: int = 0) -> bool:
    return (isinstance(value, list) and all(_int(v, low) for v in value)
            and (length is None or len(value) == length))


def _prediction_types() -> tuple[str, ...]:
    from .schedule import PREDICTION_TYPES

    return PREDICTION_TYPES


# field → (check, what it must be). Every field is required; unknown extra fields are kept.
METADATA_SCHEMA: dict[str, tuple[Any, str]] = {
    "format_version": (lambda v: v in READABLE_VERSIONS and not isinstance(v, bool), "a known format version"),
    "ddim_edit_version": (lambda v: isinstance(v, str), "a version string"),
    "model": (lambda v: isinstance(v, str) and v != "", "a model name"),
    "model_fingerprint": (lambda v: isinstance(v, str) and v != "", "a fingerprint string"),
    "schedule": (lambda v: isinstance(v, dict), "an object with timesteps, spacing, prediction_type, "
                                                "final_alpha_prod and fingerprint"),
    "prompt": (lambda v: isinstance(v, str), "a string"),
    "negative_prompt": (lambda v: isinstance(v, str), "a string"),
    "method": (lambda v: v in METHODS, "one of " + ", ".join(METHODS)),
    "guidance_scale": (_finite_number, "a finite number"),
    "inversion_guidance": (_finite_number, "a finite number"),
    "fixed_point_iterations": (lambda v: v is None or _int_list(v, low=1), "null or a list of iteration counts"),
    "unet_evaluations": (_int, "a non-negative integer"),
    "latent_shape": (lambda v: _int_list(v, 3, low=1), "a list of 3 positive integers (C, h, w)"),
    "dtype": (lambda v: isinstance(v, str), "a dtype name"),
    "source": (lambda v: isinstance(v, dict), "an object (the source image's path, hash and size)"),
}
# added in format version 3 (required there, absent before)
METADATA_SCHEMA_V3: dict[str, tuple[Any, str]] = {
    "model_signature": (lambda v: isinstance(v, list) and len(v) > 0 and all(_finite_number(x) for x in v),
                        "a non-empty list of finite numbers"),
    "model_config": (lambda v: v is None or (isinstance(v, str) and v != ""), "null or a config folder / hub id"),
    "model_family": (lambda v: v in FAMILY_NAMES, "one of " + ", ".join(FAMILY_NAMES)),
    "loras": (lambda v: isinstance(v, list) and all(
        isinstance(r, dict) and isinstance(r.get("file"), str) and isinstance(r.get("sha256"), str)
        and _finite_number(r.get("scale")) for r in v), "a list of {file, sha256, scale} objects"),
}
SCHEDULE_SCHEMA: dict[str, tuple[Any, str]] = {
    "timesteps": (lambda v: _int_list(v) and len(v) > 0, "a non-empty list of timesteps"),
    "spacing": (lambda v: isinstance(v, str), "a spacing name"),
    "prediction_type": (lambda v: v in _prediction_types(), "epsilon, v_prediction or sample"),
    "final_alpha_prod": (lambda v: _finite_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "fingerprint": (lambda v: isinstance(v, str) and v != "", "a fingerprint string"),
}
FLOW_SCHEDULE_SCHEMA: dict[str, tuple[Any, str]] = {
    "timesteps": (lambda v: isinstance(v, list) and len(v) > 0 and all(_finite_number(t) for t in v),
                  "a non-empty list of timesteps"),
    "sigmas": (lambda v: isinstance(v, list) and len(v) > 1 and all(_finite_number(s) and 0 <= s <= 1 for s in v),
               "a list of sigmas in [0, 1]"),
    "spacing": (lambda v: isinstance(v, str), "a spacing name"),
    "prediction_type": (lambda v: v == "flow", "flow"),
    "fingerprint": (lambda v: isinstance(v, str) and v != "", "a fingerprint string"),
}
SOURCE_SCHEMA: dict[str, tuple[Any, str]] = {  # all optional (images given as pixels have no path)
    "path": (lambda v: v is None or isinstance(v, str), "null or a path"),
    "sha256": (lambda v: v is None or isinstance(v, str), "null or a SHA-256 hex string"),
    "original_size": (lambda v: _int_list(v, 2, low=1), "[width, height]"),
    "size": (lambda v: _int_list(v, 2, low=1), "[width, height]"),
}


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "…"


def validate_metadata(meta: dict[str, Any]) -> None:
    """Raise :class:`TrajectoryError` naming the first metadata field that is missing or malformed."""
    schema = dict(METADATA_SCHEMA)
    if meta.get("format_version") == 3:
        schema.update(METADATA_SCHEMA_V3)
    for name, (check, what) in schema.items():
        if name not in meta:
            raise TrajectoryError(f"metadata field '{name}' is missing (it must be {what}); the file was edited or damaged")
        if not check(meta[name]):
            raise TrajectoryError(f"metadata field '{name}' must be {what}, got {_describe(meta[name])}; "
                                  "the file was edited or damaged")
    if "storage" in meta and meta["storage"] not in STORAGES:  # optional: absent means float64
        raise TrajectoryError(f"metadata field 'storage' must be one of {', '.join(STORAGES)}, got "
                              f"{_describe(meta['storage'])}; the file was edited or damaged")
    stepper = FLOW_SCHEDULE_SCHEMA if is_flow(meta) else SCHEDULE_SCHEMA
    for group, schema, optional in (("schedule", stepper, False), ("source", SOURCE_SCHEMA, True)):
        for name, (check, what) in schema.items():
            if name not in meta[group]:
                if optional:
                    continue
                raise TrajectoryError(f"metadata field '{group}.{name}' is missing (it must be {what}); "
                                      "the file was edited or damaged")
            if not check(meta[group][name]):
                raise TrajectoryError(f"metadata field '{group}.{name}' must be {what}, got "
                                      f"{_describe(meta[group][name])}; the file was edited or damaged")


def validate_tensor_types(tensors: dict[str, torch.Tensor], flow: bool = False) -> None:
    """The stored tensors have the kinds the format writes (integer timesteps, float for a flow
    model's, float data)."""
    timesteps = tensors["timesteps"]
    if timesteps.ndim != 1 or timesteps.is_floating_point() != flow or timesteps.dtype == torch.bool:
        kind = "float" if flow else "integer"
        raise TrajectoryError(f"the timesteps tensor must be a 1-D {kind} tensor, got {timesteps.dtype} "
                              f"{tuple(timesteps.shape)}")
    for name in ("latents", "latents.ends", "latents.middle", "corrections", "null_embeddings"):
        if name in tensors and not tensors[name].is_floating_point():
            raise TrajectoryError(f"the {name} tensor must hold floats, got {tensors[name].dtype}")


def content_checksum(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the canonical JSON of ``meta`` and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    digest.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

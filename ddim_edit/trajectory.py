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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import TrajectoryError
from .io import atomic_write

FORMAT_VERSION = 1
METADATA_KEY = "ddim_edit"
REQUIRED_METADATA = ("format_version", "model", "model_fingerprint", "schedule", "prompt", "method", "guidance_scale")


@dataclass
class Trajectory:
    """An inverted image: its timesteps, latents z_T … z_0, per-step data and metadata."""

    timesteps: tuple[int, ...]
    latents: torch.Tensor
    metadata: dict[str, Any]
    corrections: torch.Tensor | None = None
    null_embeddings: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.timesteps = tuple(int(t) for t in self.timesteps)
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

    def save(self, path: str | Path, force: bool = False) -> Path:
        """Write the trajectory atomically; refuse to overwrite unless ``force``."""
        from safetensors.torch import save

        tensors = {"timesteps": torch.tensor(self.timesteps, dtype=torch.int64),
                   "latents": self.latents.detach().double().contiguous().cpu()}
        if self.corrections is not None:
            tensors["corrections"] = self.corrections.detach().double().contiguous().cpu()
        if self.null_embeddings is not None:
            tensors["null_embeddings"] = self.null_embeddings.detach().float().contiguous().cpu()
        for name, tensor in self.extras.items():
            tensors[f"extra.{name}"] = tensor.detach().contiguous().cpu()
        meta = dict(self.metadata, format_version=FORMAT_VERSION)
        payload = save(tensors, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
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
            header = json.loads(raw[8:8 + header_len])
            meta = json.loads(header.get("__metadata__", {}).get(METADATA_KEY, "null"))
        except (SafetensorError, ValueError, OSError, json.JSONDecodeError) as exc:
            raise TrajectoryError(f"{path} is not a readable trajectory file (corrupt or truncated); invert the image again") from exc
        if not isinstance(meta, dict):
            raise TrajectoryError(f"{path} is a safetensors file but not a ddim-edit trajectory (no '{METADATA_KEY}' metadata)")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise TrajectoryError(
                f"{path} has trajectory format version {version}, this ddim-edit reads version {FORMAT_VERSION}; invert the image again"
            )
        missing = [key for key in REQUIRED_METADATA if key not in meta]
        if missing or "timesteps" not in tensors or "latents" not in tensors:
            raise TrajectoryError(f"{path} lacks {', '.join(missing) or 'tensors'}; invert the image again")
        extras = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
        try:
            return cls(tuple(tensors["timesteps"].tolist()), tensors["latents"], meta,
                       tensors.get("corrections"), tensors.get("null_embeddings"), extras)
        except TrajectoryError as exc:
            raise TrajectoryError(f"{path}: {exc}") from exc


def validate_shapes(traj: Trajectory) -> None:
    """Raise :class:`TrajectoryError` when the tensors do not fit the timestep count."""
    n = len(traj.timesteps)
    if traj.latents.ndim != 4 or traj.latents.shape[0] != n + 1:
        raise TrajectoryError(f"latents have shape {tuple(traj.latents.shape)}, expected ({n + 1}, C, h, w) for {n} steps")
    if traj.corrections is not None and tuple(traj.corrections.shape) != (n, *traj.latents.shape[1:]):
        raise TrajectoryError(f"corrections have shape {tuple(traj.corrections.shape)}, expected ({n}, {', '.join(map(str, traj.latents.shape[1:]))})")
    if traj.null_embeddings is not None and (traj.null_embeddings.ndim != 3 or traj.null_embeddings.shape[0] != n):
        raise TrajectoryError(f"null embeddings have shape {tuple(traj.null_embeddings.shape)}, expected ({n}, L, D)")
    schedule = traj.metadata.get("schedule", {})
    if schedule and list(schedule.get("timesteps", traj.timesteps)) != list(traj.timesteps):
        raise TrajectoryError("the metadata's timesteps differ from the stored timesteps tensor")
    if traj.metadata.get("method") == "exact" and traj.corrections is None:
        raise TrajectoryError("an 'exact' trajectory without corrections")
    if traj.metadata.get("method") == "null-text" and traj.null_embeddings is None:
        raise TrajectoryError("a 'null-text' trajectory without null embeddings")


def check_compatible(traj: Trajectory, model, schedule=None) -> None:
    """Reject a trajectory made with another model, latent shape or schedule, saying how to fix it."""
    made_with = traj.metadata.get("model")
    if traj.metadata.get("model_fingerprint") != model.fingerprint():
        raise TrajectoryError(
            f"this trajectory was made with model {made_with!r}, not the loaded {model.name!r}; "
            f"pass --model {made_with} or invert the image again with this model"
        )
    expected_channels = int(model.unet.config.in_channels)
    if traj.latents.shape[1] != expected_channels:
        raise TrajectoryError(f"trajectory latents have {traj.latents.shape[1]} channels, the model expects {expected_channels}")
    if schedule is not None:
        stored = traj.metadata["schedule"]
        if stored.get("fingerprint") != schedule.fingerprint() or list(stored["timesteps"]) != list(schedule.timesteps):
            raise TrajectoryError(
                "this trajectory was made with another noise schedule or timestep list; invert again with the same --steps/--spacing"
            )

"""Inverted trajectories cached per (model, image, prompt, method, steps, guidance, size, negative prompt).

Inverting is the expensive half of an edit (the exact method's record pass alone is 2N guided UNet
evaluations); trying another target prompt, mask or reweighting on the same photo reuses the
trajectory. The guidance is part of the key because the exact method's corrections and null-text's
embeddings are fitted for one guidance.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..trajectory import Trajectory


@dataclass(frozen=True)
class TrajectoryKey:
    """What an inversion depends on (the image by the hash of its pixels)."""

    model: str
    image: str
    prompt: str
    method: str
    steps: int
    guidance: float
    size: int | None = None
    negative_prompt: str = ""

    def digest(self) -> str:
        """A short stable name for files of this key."""
        return hashlib.sha256(repr(astuple(self)).encode()).hexdigest()[:16]


@dataclass
class CachedTrajectory:
    """A trajectory with what its inversion cost (``record``: the invert job's record)."""

    key: TrajectoryKey
    trajectory: Trajectory
    record: dict[str, Any]
    file: Path | None = None
    uses: int = field(default=0)


class TrajectoryCache:
    """The ``capacity`` most recently used inversions; files written on first download only.

    Thread-safe on its own; the editor also holds the model lock while it inverts.
    """

    def __init__(self, folder: str | Path, capacity: int = 8) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[TrajectoryKey, CachedTrajectory] = OrderedDict()
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: TrajectoryKey) -> bool:
        return key in self._entries

    def get(self, key: TrajectoryKey, invert: Callable[[], tuple[Trajectory, dict[str, Any]]]
            ) -> tuple[CachedTrajectory, bool]:
        """(entry, whether it was cached); ``invert()`` → (trajectory, record) runs on a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                entry.uses += 1
                return entry, True
            trajectory, record = invert()
            entry = CachedTrajectory(key, trajectory, dict(record), uses=1)
            self._entries[key] = entry
            self.misses += 1
            while len(self._entries) > self.capacity:
                _, evicted = self._entries.popitem(last=False)
                if evicted.file is not None:
                    evicted.file.unlink(missing_ok=True)
            return entry, False

    def file_for(self, entry: CachedTrajectory) -> Path:
        """The entry's trajectory as a ``.safetensors`` file (written once)."""
        with self._lock:
            if entry.file is None or not entry.file.is_file():
                path = self.folder / f"{entry.key.digest()}.traj.safetensors"
                entry.trajectory.save(path, force=True)
                entry.file = path
            return entry.file

"""Writing a job's result: the image (or trajectory) atomically, with what it takes to re-run it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..images import save_image
from .requests import JobResult


def write_result(result: JobResult, output: str | Path, force: bool = False, picture: np.ndarray | None = None) -> Path:
    """Write ``result`` to ``output``: the trajectory for ``invert``, else the image (or ``picture``,
    e.g. a comparison grid) with the job's parameters embedded (JSON and an A1111 ``parameters`` text).

    Raises:
        OutputError: the file exists without ``force``, or the write fails (nothing is left behind).
    """
    if result.edit == "invert":
        return result.trajectory.save(output, force=force, storage=result.record.get("trajectory_storage", "float64"))
    return save_image(output, result.image if picture is None else picture, result.parameters, force=force)

"""Writing a job's result: the image (or trajectory) atomically, with what it takes to re-run it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..images import grid, save_image
from ..io import grid_output
from .requests import JobResult


def comparison_grid(result: JobResult) -> np.ndarray:
    """The result's labelled panels side by side (source, reconstruction, edit, …), in their order."""
    return grid(list(result.panels.values()), list(result.panels))


def write_result(result: JobResult, output: str | Path, force: bool = False, with_grid: bool = False) -> Path:
    """Write ``result`` to ``output``: the trajectory for ``invert``, else the image with the job's
    parameters embedded (JSON and an A1111 ``parameters`` text); ``with_grid`` also writes the
    comparison grid beside it (:func:`~ddim_edit.io.grid_output`).

    Raises:
        OutputError: a file exists without ``force``, or a write fails (nothing is left behind).
    """
    if result.edit == "invert":
        return result.trajectory.save(output, force=force, storage=result.record.get("trajectory_storage", "float64"))
    written = save_image(output, result.image, result.parameters, force=force)
    if with_grid:
        picture = comparison_grid(result)
        parameters = dict(result.parameters, grid=list(result.panels), size=[picture.shape[1], picture.shape[0]])
        save_image(grid_output(output), picture, parameters, force=force)
    return written

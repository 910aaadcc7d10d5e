"""Strict JSON (ddim_edit/json_output.py): non-finite numbers become null, in the CLI and the bench."""

from __future__ import annotations

import math

import numpy as np
import torch

from tests.cli_helpers import run
from tests.number_helpers import _strict_loads
from tests.number_helpers import out, work  # noqa: F401 (pytest fixtures)


def test_json_output_is_strict(work, out):
    first = run("reconstruct", work / "photo.traj.safetensors", "-o", out / "r.png", "-q")
    assert first.exit_code == 0, first.output
    # The reconstruction against itself: PSNR is +inf.
    again = run("reconstruct", work / "photo.traj.safetensors", "-o", out / "r2.png", "--source", out / "r.png",
                "--format", "json", "-q")
    assert again.exit_code == 0, again.output
    info = _strict_loads(again.stdout)
    assert info["psnr"] is None and "Infinity" not in again.stdout


def test_json_safe_maps_every_non_finite_number_to_null():
    from ddim_edit.json_output import strict_json

    payload = {"a": float("nan"), "b": [float("inf"), 1.5, {"c": -math.inf}], "d": np.float32("nan"),
               "e": np.float64(2.0), "f": torch.tensor(float("inf")), "g": (1, float("nan")), "h": True}
    assert _strict_loads(strict_json(payload)) == {"a": None, "b": [None, 1.5, {"c": None}], "d": None, "e": 2.0,
                                                   "f": None, "g": [1, None], "h": True}


def test_bench_json_is_strict(out):
    # One scene, 2 steps; the summary holds NaN-able means (a suite metric of no scene) and options.
    result = run("bench", "recon", "--n", 1, "--steps", 2, "--method", "ddim", "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    summary = _strict_loads(result.stdout)
    assert summary["variants"]["ddim"]["psnr"] > 10

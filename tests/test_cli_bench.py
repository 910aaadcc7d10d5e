"""The ``bench`` command (cli/bench.py): suites on the bundled model, the progress it shows, its --set options."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.main import app
from tests.cli_helpers import run
from tests.number_helpers import refused
from tests.number_helpers import out  # noqa: F401 (pytest fixtures)


def test_bench_recon_on_the_bundled_model(tmp_path):
    out = tmp_path / "grids"
    result = CliRunner().invoke(app, ["bench", "recon", "--seed", "1000", "--n", "2", "--steps", "5", "--method", "ddim",
                                      "--method", "exact", "--format", "json", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == "toy" and summary["n"] == 2 and summary["counts"] == {"ddim": 2, "exact": 2}
    ddim, exact = summary["variants"]["ddim"], summary["variants"]["exact"]
    assert ddim["unet_evals"] == 5 + 2 * 5  # invert + guided replay
    assert exact["unet_evals"] == 5 + 2 * 5 + 2 * 5  # + the recorded corrections
    assert exact["gap_db"] == pytest.approx(0.0, abs=0.05)  # exact replays reach the VAE ceiling
    assert ddim["psnr"] < exact["psnr"]
    assert exact["vae_psnr"] > 20  # the bundled VAE reconstructs the toy world
    assert "variant" in result.stderr and "exact" in result.stderr  # the table
    assert len(list(out.glob("recon-*.png"))) == 4


def test_bench_recon_defaults_to_the_fast_methods_and_shows_each_scene_on_stderr():
    from ddim_edit.bench.recon import DEFAULT_METHODS

    assert "fixed-point" not in DEFAULT_METHODS and "null-text" not in DEFAULT_METHODS
    assert {"ddim", "negative-prompt", "exact"} <= set(DEFAULT_METHODS)
    result = CliRunner().invoke(app, ["bench", "recon", "--n", "2", "--steps", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["counts"]) == set(DEFAULT_METHODS)
    for scene in (1, 2):  # each scene's progress, method by method
        for method in DEFAULT_METHODS:
            assert f"scene {scene}: {method} done" in result.stderr, result.stderr
    assert "2/2" in result.stderr
    quiet = CliRunner().invoke(app, ["bench", "recon", "--n", "1", "--steps", "2", "--method", "ddim", "--quiet"])
    assert quiet.exit_code == 0 and "scene 1" not in quiet.stderr and "variant" in quiet.stderr


# ---------------------------------------------------------------------- 11. bench --set keys
def test_unknown_bench_options_are_refused(out):
    line = refused(run("bench", "swap", "--n", 1, "--steps", 2, "--set", "blendd=0.3", "--out", out / "g"),
                   "'blendd'", "--set", "inversion, swap")
    assert "blendd" in line and not (out / "g").exists()

"""The bench harness: `bench recon` on the bundled model through the CLI, JSON and grids."""

import json

import pytest
from click.testing import CliRunner

from cli.main import app
from ddim_edit.bench.harness import load_suite
from ddim_edit.errors import DdimEditError


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


def test_unknown_suite_is_a_clear_error():
    with pytest.raises(DdimEditError, match="unknown bench suite"):
        load_suite("nope")

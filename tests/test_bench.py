"""The bench harness: `bench recon` on the bundled model through the CLI, JSON and grids."""

import json

import numpy as np

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


def test_centroid_shift_tells_a_moved_mask_from_a_misshapen_one():
    from ddim_edit.metrics import centroid_shift, iou

    square = np.zeros((32, 32), bool)
    square[8:16, 8:16] = True
    moved = np.roll(square, (3, 4), axis=(0, 1))
    assert centroid_shift(square, moved) == pytest.approx(5.0)
    assert centroid_shift(square, square) == 0.0
    grown = np.zeros_like(square)
    grown[6:18, 6:18] = True  # same centre, larger: low IoU, no shift
    assert iou(square, grown) < 0.5 and centroid_shift(square, grown) == pytest.approx(0.0)
    assert np.isnan(centroid_shift(square, np.zeros_like(square)))


def test_swap_score_reports_the_shift_of_a_displaced_edit():
    from dataclasses import replace

    from ddim_edit.bench.swap import score
    from ddim_edit.toy.world import Scene, render, with_changes

    scene = Scene(shape="square", color="red", fill="solid", background="white", cx=32.0, cy=32.0, size=24.0)
    truth = with_changes(scene, color="blue")
    exact = score(render(truth, image_size=64), "color", scene, truth)
    displaced = score(render(replace(truth, cx=38.0), image_size=64), "color", scene, truth)
    assert exact["shift"] == pytest.approx(0.0, abs=0.5) and exact["iou"] > 0.9
    assert displaced["shift"] == pytest.approx(6.0, abs=1.0) and displaced["iou"] < exact["iou"]
    # a square moved by 3 px costs background PSNR next to the silhouettes only
    nudged = score(render(replace(truth, cx=35.0), image_size=64), "color", scene, truth)
    assert exact["far_bg_psnr"] == 60.0 and nudged["far_bg_psnr"] == 60.0 and nudged["bg_psnr"] < 25
    assert displaced["bg_psnr"] < displaced["far_bg_psnr"] < 60.0  # 6 px: partly beyond the 4 px ring
    tinted = render(truth, image_size=64).astype(int)
    tinted[:4] += 10  # a far band of the background changed
    assert score(tinted.astype(np.uint8), "color", scene, truth)["far_bg_psnr"] < 40


def test_bench_swap_reports_each_kind_with_by_kind():
    """``by_kind`` adds IoU and background PSNR per kind of swap: each kind's value is its scene's."""
    from ddim_edit.bench.harness import BenchContext, run_suite
    from ddim_edit.model import load_model

    model = load_model("toy")  # its tokenizer keeps the toy captions' word counts (replace mode)

    def run(options):
        ctx = BenchContext(model=model, steps=2, methods=("exact",), n=4, quiet=True, options=options)
        return run_suite("swap", ctx)["variants"]["exact"]

    plain, by_kind = run({}), run({"by_kind": True})
    assert not any(name.endswith("_iou") for name in plain)
    kinds = ("color", "shape", "fill", "background")  # scene i gets kind i % 4: one scene each
    for name in ("iou", "bg_psnr", "far_bg_psnr"):
        values = [by_kind[f"{kind}_{name}"] for kind in kinds]
        assert np.mean(values) == pytest.approx(by_kind[name])
        assert by_kind[name] == pytest.approx(plain[name])  # the option only adds keys
    with pytest.raises(DdimEditError, match="no option 'by_knd'"):
        run({"by_knd": True})


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

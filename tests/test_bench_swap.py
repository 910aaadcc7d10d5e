"""The swap bench suite (ddim_edit/bench/swap.py): its score and its per-kind report."""

import numpy as np
import pytest

from ddim_edit.errors import DdimEditError


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

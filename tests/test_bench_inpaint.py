"""The inpaint bench suite (ddim_edit/bench/inpaint.py): every variant runs and counts its UNet evaluations."""

from __future__ import annotations

import numpy as np

from tests.inpaint_helpers import tiny_model  # noqa: F401 (pytest fixtures)


def test_bench_suite_runs_every_variant_and_counts_evaluations(tiny_model):
    from ddim_edit.bench.harness import BenchContext
    from ddim_edit.bench.inpaint import run, scene_mask
    from ddim_edit.toy.world import sample_scenes, shape_mask

    scenes = sample_scenes(1000, 2)
    for scene in scenes:  # the three mask kinds: inside the shape, outside it, across its outline
        silhouette = shape_mask(scene, 64)
        rng = np.random.default_rng(0)
        inside, outside, across = (scene_mask(scene, kind, 64, rng) for kind in ("shape", "background", "boundary"))
        assert inside.any() and not (inside & ~silhouette).any()
        assert outside.any() and not (outside & silhouette).any()
        assert (across & silhouette).any() and (across & ~silhouette).any()
    ctx = BenchContext(model=tiny_model, steps=3, n=1, options={"resample": 1, "jump_length": 2})
    results = list(run(ctx, scenes[:1]))
    names = {r.variant for r in results}
    assert {"corrupted", "shared", "shared-freshhole", "bld", "repaint", "shared@shape", "bld@boundary"} <= names
    by_name = {r.variant: r.metrics for r in results}
    assert by_name["shared"]["unet_evals"] == 3 + 2 * 3  # plain DDIM inversion + guided sampling
    assert by_name["bld"]["unet_evals"] == 2 * 3  # no inversion needed
    assert by_name["repaint"]["unet_evals"] == 3 + 2 * (2 * 2 + 2 * 1)  # chunks (0,2), (2,3), each walked twice
    assert by_name["corrupted"]["psnr_mask"] < 30 and by_name["corrupted"]["seam_err"] > 0

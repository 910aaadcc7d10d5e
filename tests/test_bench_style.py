"""The style bench suite (ddim_edit/bench/style.py) runs the function the CLI runs."""

import pytest

from ddim_edit.edits.style import StyleOptions


# ------------------------------------------------------------------------------- bench suite
def test_bench_style_suite_runs_the_cli_function(tiny_model):
    from ddim_edit.bench.harness import BenchContext, run_suite
    from ddim_edit.bench.style import variant_options

    ctx = BenchContext(model=tiny_model, steps=2, guidance=1.0, n=2, quiet=True,
                       options={"variants": ["styleid", "content", "g0.3-t1.5+all"]})
    summary = run_suite("style", ctx)
    assert summary["counts"] == {"styleid": 2, "content": 2, "g0.3-t1.5+all": 2}
    metrics = summary["variants"]["styleid"]
    assert {"iou", "color_ok", "fill_ok", "background_ok", "psnr", "unet_evals", "seconds", "peak_mb"} <= set(metrics)
    assert metrics["unet_evals"] == 3 * 2 + 2 * 2  # transfer + inversion of both images (no record pass)
    assert variant_options("g0.3-t1.5+all") == StyleOptions(gamma=0.3, temperature=1.5, layers=("all",))
    assert variant_options("styleid") == StyleOptions(gamma=0.75, structure_layers=())  # StyleID as published
    assert variant_options("query-only") == StyleOptions(gamma=0.5, structure_layers=())  # the previous default
    with pytest.raises(Exception, match="unknown style variant"):
        variant_options("sharper")

"""FlowEdit from the front ends: ``swap --method flowedit``, its refusals, a manifest job, ``bench swap``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ddim_edit.toy import read_scene
from tests.batch_helpers import photos, records, write_manifest  # noqa: F401 (fixture)
from tests.cli_helpers import SOURCE, TARGET, one_line_error, run

from ddim_edit.model import assets_dir

RED = assets_dir() / "examples" / "red-circle.png"


def test_swap_with_flowedit_edits_the_toy_image_without_inverting(tmp_path):
    out = tmp_path / "blue.png"
    result = run("swap", RED, "-s", SOURCE, "-t", TARGET, "--method", "flowedit", "--steps", "20", "-o", out,
                 "--grid", "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    # 13 of 20 steps (33 of 50, scaled) × 2 branches × classifier-free guidance
    assert info["method"] == "flowedit" and info["unet_evaluations"] == 13 * 4
    assert info["inversion_unet_evaluations"] == 0
    edit = Image.open(out)
    assert read_scene(np.asarray(edit.convert("RGB"))).color == "blue"
    parameters = json.loads(edit.info["ddim-edit"])
    assert parameters["method"] == "flowedit" and parameters["n_max"] == 13 and parameters["target_guidance"] == 13.5
    assert "Sampler: FlowEdit" in edit.info["parameters"]
    assert (tmp_path / "blue.grid.png").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--method", "flowedit", "--blend", "circle"], "blend is prompt-to-prompt's"),
    (["--n-max", "10"], "n_max is FlowEdit's"),
    (["--method", "flowedit", "--n-max", "60"], "more than the 50 steps"),
    (["--method", "flowedit", "--n-max", "5", "--n-min", "5"], "below n_max"),
    (["--method", "flowedit", "--save-trajectory", "x.traj.safetensors"], "no trajectory to save"),
    (["--method", "flowedit", "--save-attention", "maps.png"], "FlowEdit uses none"),
])
def test_swap_refuses_the_other_methods_settings_in_one_line(tmp_path, args, fragment):
    result = run("swap", RED, "-s", SOURCE, "-t", TARGET, "-o", tmp_path / "out.png", "-q", *args)
    one_line_error(result, fragment)
    assert not (tmp_path / "out.png").exists()


def test_only_swap_takes_flowedit():
    result = run("invert", RED, "-p", SOURCE, "--method", "flowedit")
    assert result.exit_code == 2 and "'flowedit' is not one of" in result.output
    one_line_error(run("bench", "recon", "--n", "1", "--steps", "2", "--method", "flowedit"),
                   "recon suite cannot run --method flowedit")


def test_a_manifest_swap_job_runs_flowedit_with_its_settings(photos, tmp_path):  # noqa: F811
    jobs = write_manifest(photos, [
        {"edit": "swap", "image": "photo.png", "source_prompt": SOURCE, "target_prompt": TARGET, "steps": 10,
         "method": "flowedit", "n_max": 6, "target_guidance": 9, "output": "blue.png"},
        {"edit": "reconstruct", "image": "photo.png", "prompt": SOURCE, "steps": 4, "method": "flowedit"},
    ])
    out = tmp_path / "out"
    result = run("batch", jobs, "--out", out, "-q", "--format", "json")
    assert result.exit_code == 1, result.output  # one job failed
    done = {record["line"]: record for record in records(out)}
    assert done[1]["status"] == "ok", done[1]
    assert done[1]["unet_evaluations"] == 6 * 4
    assert done[2]["status"] == "failed" and "swap method only" in done[2]["error"]


def test_bench_swap_runs_flowedit_beside_an_inversion_method():
    result = run("bench", "swap", "--n", "2", "--steps", "6", "--method", "flowedit", "--method", "ddim",
                 "--set", 'flowedit={"n_max": 5}', "--set", "by_kind=true", "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    variants = json.loads(result.stdout)["variants"]
    table = result.stderr[result.stderr.index("per kind of swap:"):].splitlines()
    assert [row.split()[:2] for row in table[2:]] == [["flowedit", "color"], ["flowedit", "shape"],
                                                      ["ddim", "color"], ["ddim", "shape"]]
    assert variants["flowedit"]["edit_evals"] == 5 * 4 and variants["flowedit"]["inversion_evals"] == 0
    assert variants["ddim"]["inversion_evals"] > 0

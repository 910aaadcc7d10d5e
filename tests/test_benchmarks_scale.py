"""The real-size benchmark (benchmarks/scale.py) runs end to end on tiny configs, so it cannot rot."""

import json
import math

import pytest

from benchmarks import scale


def test_scale_bench_reports_every_edit(tmp_path, capsys):
    out = tmp_path / "report.json"
    report = scale.main(["--arch", "tiny", "--steps", "2", "--format", "json", "--quiet", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed == report
    assert set(report["edits"]) == set(scale.EDITS)
    for edit, row in report["edits"].items():
        for key in ("time_ratio", "peak_ratio"):
            assert row[key] is not None and math.isfinite(row[key]) and row[key] > 0, (edit, key, row)
        assert isinstance(row["time_met"], bool) and isinstance(row["memory_met"], bool)
        assert row["ours"]["peak_bytes"] > 0 and row["reference"]["peak_bytes"] > 0
    edits = report["edits"]
    assert edits["invert-ddim"]["ours"]["items"] == 2 and edits["invert-exact"]["ours"]["items"] == 2 + 2 * 2
    assert edits["reconstruct"]["ours"]["items"] == 2 * 2 and edits["reconstruct"]["reference"]["items"] == 2 * 2
    assert edits["style"]["ours"]["items"] == 3 * 2  # three branches, no guidance
    assert edits["swap"]["ours"]["items"] == 3 * 2  # target guided + source conditional (blend and maps)
    traj = report["trajectory"]
    assert traj["bytes"]["float16"] < traj["bytes"]["float64"]
    assert traj["bytes_50_steps"]["float16"] < 0.5 * traj["bytes_50_steps"]["float64"]
    assert traj["replay_max_abs_difference_float16_file"] < 1e-4  # replays read x_T and corrections
    assert "| swap |" in scale.table(report)


def test_scale_bench_runs_the_sdxl_layout(capsys):
    report = scale.main(["--arch", "tiny-xl", "--steps", "1", "--edits", "swap", "style", "--format", "json", "--quiet"])
    assert set(report["edits"]) == {"invert-exact", "swap", "style"}  # the edits' trajectory is inverted first
    assert all(math.isfinite(row["time_ratio"]) for row in report["edits"].values())


@pytest.mark.parametrize("arch, guidance, per_step", [("tiny-sd3", 7.0, 2), ("tiny-flux", 3.5, 1)])
def test_scale_bench_runs_the_flow_families(arch, guidance, per_step, capsys):
    """SD3 (classifier-free guidance: 2 transformer items per step) and FLUX (embedded guidance: 1) run every
    edit against their pipelines, with #28's targets."""
    report = scale.main(["--arch", arch, "--steps", "2", "--format", "json", "--quiet"])
    assert json.loads(capsys.readouterr().out) == report
    assert report["guidance"] == guidance and report["reference_items_per_step"] == per_step
    assert report["targets"]["issue"] == "#28" and report["targets"]["time_on"] == "cpu_time_ratio"
    edits = report["edits"]
    assert list(edits) == list(scale.EDITS)  # every edit has a row, in order
    table = scale.table(report)
    assert "targets (issue #28)" in table
    measured = edits
    for edit, row in measured.items():
        for key in ("time_ratio", "cpu_time_ratio", "peak_ratio"):
            assert row[key] is not None and math.isfinite(row[key]) and row[key] > 0, (edit, key, row)
        assert row["memory_target"] == scale.FLOW_MEMORY_TARGETS[edit] and row["time_target"] == 1.05
        assert row["time_met"] == (row["cpu_time_ratio"] <= 1.05)  # #28's time target is on CPU time
        assert row["memory_met"] == (row["peak_ratio"] <= row["memory_target"])
    assert report["targets_met"] == {"time": all(row["time_met"] for row in measured.values()),
                                     "memory": all(row["memory_met"] for row in measured.values())}
    steps = 2
    assert edits["invert-ddim"]["ours"]["items"] == steps  # unguided (SD3) / one embedded-guidance item (FLUX)
    assert edits["invert-exact"]["ours"]["items"] == steps + per_step * steps  # + the guided record pass
    for edit in ("invert-ddim", "reconstruct", "inpaint"):
        assert edits[edit]["reference"]["items"] == per_step * steps
    assert edits["reconstruct"]["ours"]["items"] == edits["inpaint"]["ours"]["items"] == per_step * steps
    assert report["trajectory"]["replay_max_abs_difference_float16_file"] < 1e-4

"""The real-size benchmark (benchmarks/scale.py) runs end to end on tiny configs, so it cannot rot."""

import json
import math

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

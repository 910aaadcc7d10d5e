"""The real-size benchmark (benchmarks/scale.py) runs end to end on tiny configs, so it cannot rot."""

import json
import math

import pytest

from benchmarks import scale
from benchmarks.scale_configs import SD15_UNET, SDXL_UNET


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


def test_real_configs_are_sd15_and_sdxl_base():
    # the numbers that make the UNets what they are (public unet/config.json of both repos)
    assert SD15_UNET["block_out_channels"] == (320, 640, 1280, 1280) and SD15_UNET["cross_attention_dim"] == 768
    assert SDXL_UNET["transformer_layers_per_block"] == (1, 2, 10) and SDXL_UNET["cross_attention_dim"] == 2048
    assert SDXL_UNET["projection_class_embeddings_input_dim"] == 2816


def test_float16_trajectory_storage(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    from ddim_edit.errors import TrajectoryError
    from ddim_edit.inversion import InversionOptions, invert
    from ddim_edit.replay import reconstruct
    from ddim_edit.trajectory import Trajectory
    from ddim_edit.workflow import make_schedule

    schedule = make_schedule(tiny_model, 6)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    traj = invert(tiny_model, schedule, z0, "a red circle", InversionOptions(method="exact"), progress=False)
    full = traj.save(tmp_path / "full.safetensors")
    half = traj.save(tmp_path / "half.safetensors", storage="float16")
    assert half.stat().st_size < 0.7 * full.stat().st_size
    raw = load_file(half)
    assert "latents" not in raw  # older readers refuse the file instead of replaying rounded latents
    assert raw["latents.middle"].dtype == torch.float16 and raw["latents.ends"].dtype == torch.float64
    assert raw["corrections"].dtype == torch.float32
    loaded = Trajectory.load(half)
    assert loaded.metadata["storage"] == "float16" and "storage" not in Trajectory.load(full).metadata
    assert loaded.latents.dtype == torch.float64 and loaded.corrections.dtype == torch.float64
    assert torch.equal(loaded.x_T, traj.x_T) and torch.equal(loaded.z_0, traj.z_0)  # what exactness needs
    assert torch.allclose(loaded.latents, traj.latents, rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        difference = (reconstruct(tiny_model, loaded, progress=False) - reconstruct(tiny_model, traj, progress=False))
    assert float(difference.abs().max()) < 1e-4
    # saving a loaded float16 trajectory as float64 drops the storage mark
    assert "storage" not in Trajectory.load(loaded.save(tmp_path / "again.safetensors")).metadata
    # the checksum covers the float16 tensors
    tampered = dict(raw)
    tampered["latents.middle"] = raw["latents.middle"] + 1
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(half, "pt") as handle:
        header = handle.metadata()
    save_file(tampered, tmp_path / "tampered.safetensors", metadata=header)
    with pytest.raises(TrajectoryError, match="modified"):
        Trajectory.load(tmp_path / "tampered.safetensors")
    with pytest.raises(ValueError, match="storage"):
        traj.save(tmp_path / "x.safetensors", storage="int8")

"""Trajectory files: round trip, corrupt files, mismatched model or schedule."""

import json

import pytest
import torch

from ddim_edit.errors import TrajectoryError
from ddim_edit.inversion import InversionOptions, invert
from ddim_edit.model import EditModel
from ddim_edit.replay import reconstruct, replay_plan
from ddim_edit.schedule import Schedule
from ddim_edit.testing import tiny_pipeline
from ddim_edit.trajectory import Trajectory


@pytest.fixture()
def exact_traj(tiny_model):
    schedule = Schedule.from_scheduler_config(tiny_model.scheduler_config, num_steps=5)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return invert(tiny_model, schedule, z0, "a red cat", InversionOptions(method="exact"), progress=False)


def test_round_trip_keeps_everything(tmp_path, tiny_model, exact_traj):
    path = exact_traj.save(tmp_path / "t.traj.safetensors")
    loaded = Trajectory.load(path)
    assert loaded.timesteps == exact_traj.timesteps
    assert torch.equal(loaded.latents, exact_traj.latents.double())
    assert torch.equal(loaded.corrections, exact_traj.corrections.double())
    assert loaded.metadata["prompt"] == "a red cat" and loaded.metadata["method"] == "exact"
    assert torch.equal(reconstruct(tiny_model, loaded, progress=False), reconstruct(tiny_model, exact_traj, progress=False))


def test_no_overwrite_without_force(tmp_path, exact_traj):
    from ddim_edit.errors import OutputError

    path = exact_traj.save(tmp_path / "t.traj.safetensors")
    with pytest.raises(OutputError, match="--force"):
        exact_traj.save(path)
    exact_traj.save(path, force=True)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_files_are_rejected(tmp_path, exact_traj, damage):
    path = exact_traj.save(tmp_path / "t.traj.safetensors")
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00" * 64, "empty": b""}[damage])
    with pytest.raises(TrajectoryError, match="invert the image again"):
        Trajectory.load(path)


def test_foreign_safetensors_and_version(tmp_path, exact_traj):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(TrajectoryError, match="not a ddim-edit trajectory"):
        Trajectory.load(tmp_path / "other.safetensors")
    meta = dict(exact_traj.metadata, format_version=99)
    save_file({"timesteps": torch.tensor(exact_traj.timesteps), "latents": exact_traj.latents.float()},
              tmp_path / "future.safetensors", metadata={"ddim_edit": json.dumps(meta)})
    with pytest.raises(TrajectoryError, match="version 99"):
        Trajectory.load(tmp_path / "future.safetensors")


def test_bad_shapes_are_rejected(tmp_path, exact_traj):
    from safetensors.torch import save_file

    meta = dict(exact_traj.metadata)
    save_file({"timesteps": torch.tensor(exact_traj.timesteps), "latents": exact_traj.latents[:3].float().contiguous(),
               "corrections": exact_traj.corrections.float()}, tmp_path / "bad.safetensors",
              metadata={"ddim_edit": json.dumps(meta)})
    with pytest.raises(TrajectoryError, match="expected \\(6, C, h, w\\)"):
        Trajectory.load(tmp_path / "bad.safetensors")


def test_other_model_or_schedule_is_rejected(tiny_model, exact_traj):
    other = EditModel.from_pipeline(tiny_pipeline(seed=7), name="other")
    with pytest.raises(TrajectoryError, match="made with model 'tiny'"):
        replay_plan(other, exact_traj)
    v_model = EditModel.from_pipeline(tiny_pipeline(prediction_type="v_prediction", seed=0), name="tiny-v")
    assert v_model.fingerprint() == tiny_model.fingerprint()  # same weights, other schedule maths
    with pytest.raises(TrajectoryError, match="another noise schedule"):
        replay_plan(v_model, exact_traj)


def test_exact_reconstruction_needs_the_recorded_guidance(tiny_model, exact_traj):
    with pytest.raises(TrajectoryError, match="exactly at guidance 7.5"):
        reconstruct(tiny_model, exact_traj, guidance_scale=3.0, progress=False)
    plan = replay_plan(tiny_model, exact_traj, guidance_scale=3.0)  # edits may sample at another guidance
    assert plan.guidance_scale == 3.0


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

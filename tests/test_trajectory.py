"""Trajectory files: round trip, corrupt files, mismatched model or schedule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_tensors, save as save_tensors

from ddim_edit.errors import TrajectoryError
from ddim_edit.inversion import InversionOptions, invert
from ddim_edit.model import EditModel
from ddim_edit.replay import reconstruct, replay_plan
from ddim_edit.schedule import Schedule
from ddim_edit.testing import tiny_pipeline
from ddim_edit.trajectory import CHECKSUM_KEY, content_checksum, FORMAT_VERSION, METADATA_KEY, Trajectory
from tests.cli_helpers import run, SOURCE, TARGET
from tests.number_helpers import files, refused
from tests.number_helpers import out, work  # noqa: F401 (pytest fixtures)


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


# ---------------------------------------------------------------------- 2. non-finite latents and images
def _rewrite(path: Path, dest: Path, change_meta=None, change_tensors=None, checksum: str | None = "recompute",
             version: int | None = None) -> Path:
    """Copy trajectory ``path`` to ``dest`` with edited metadata/tensors, as a hand edit would.

    checksum: ``recompute`` (a consistent file), ``keep`` (the original: a tampered file), or None (no checksum).
    """
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    meta = json.loads(header[METADATA_KEY])
    tensors = load_tensors(raw)
    if change_meta:
        change_meta(meta)
    if change_tensors:
        change_tensors(tensors)
    if version is not None:
        meta["format_version"] = version
    extra = {}
    if checksum == "recompute":
        extra[CHECKSUM_KEY] = content_checksum(meta, tensors)
    elif checksum == "keep":
        extra[CHECKSUM_KEY] = header[CHECKSUM_KEY]
    dest.write_bytes(save_tensors({k: v.contiguous() for k, v in tensors.items()},
                                  metadata={METADATA_KEY: json.dumps(meta), **extra}))
    return dest


def _poison(tensors):
    tensors["latents"][2, 0, 1, 1] = float("nan")


@pytest.mark.parametrize("version,checksum", [(1, None), (2, "recompute")])
def test_nan_in_trajectory_latents_is_refused(work, out, version, checksum):
    bad = _rewrite(work / "photo.traj.safetensors", out / "nan.traj.safetensors", change_tensors=_poison,
                   checksum=checksum, version=version)
    before = files(out)
    refused(run("reconstruct", bad, "-o", out / "r.png"), "NaN")
    refused(run("swap", bad, "-t", TARGET, "-o", out / "s.png"), "NaN")
    assert files(out) == before


# ---------------------------------------------------------------------- 6. trajectory schema and checksum
def _drop(key, group=None):
    def change(meta):
        del (meta[group] if group else meta)[key]
    return change


def _set(key, value, group=None):
    def change(meta):
        (meta[group] if group else meta)[key] = value
    return change


@pytest.mark.parametrize("change,fragment", [
    (_drop("negative_prompt"), "'negative_prompt' is missing"),
    (_drop("timesteps", "schedule"), "'schedule.timesteps' is missing"),
    (_set("schedule", [999, 749, 499, 249]), "'schedule' must be"),
    (_set("guidance_scale", "7.5"), "'guidance_scale' must be a finite number"),
    (_set("guidance_scale", None), "'guidance_scale' must be a finite number"),
    (_set("method", "magic"), "'method' must be one of"),
    (_set("prompt", 42), "'prompt' must be a string"),
    (_set("prediction_type", "x0", "schedule"), "'schedule.prediction_type'"),
    (_set("latent_shape", [4, 16]), "'latent_shape'"),
    (_set("source", "photo.png"), "'source' must be"),
    (_set("unet_evaluations", -1), "'unet_evaluations'"),
    (_set("model", ""), "'model'"),
])
def test_malformed_metadata_names_the_field(work, out, change, fragment):
    bad = _rewrite(work / "photo.traj.safetensors", out / "bad.traj.safetensors", change_meta=change, checksum="keep")
    before = files(out)
    refused(run("reconstruct", bad, "-o", out / "r.png"), fragment, "invert the image again")
    refused(run("swap", bad, "-t", TARGET, "-o", out / "s.png"), fragment)
    assert files(out) == before
    with pytest.raises(TrajectoryError, match=re.escape(fragment)):
        Trajectory.load(bad)


def _shrink(tensors):
    for name in ("latents", "corrections"):
        tensors[name] = tensors[name][..., :8, :8].clone()


def _nudge(tensors):
    tensors["latents"][1, 0, 0, 0] += 0.25


@pytest.mark.parametrize("change_meta,change_tensors,checksum,fragment", [
    (_set("method", "ddim"), None, "keep", "was modified"),
    (_set("prompt", "a solid blue circle on a white background"), None, "keep", "was modified"),
    (_set("guidance_scale", 3.0), None, "keep", "was modified"),
    (None, _nudge, "keep", "was modified"),
    (None, _shrink, "keep", "'latent_shape' is [4, 16, 16]"),
    (_set("latent_shape", [4, 8, 8]), _shrink, "keep", "was modified"),
    (None, None, None, "no checksum"),
])
def test_tampered_trajectories_are_refused(work, out, change_meta, change_tensors, checksum, fragment):
    bad = _rewrite(work / "photo.traj.safetensors", out / "bad.traj.safetensors", change_meta=change_meta,
                   change_tensors=change_tensors, checksum=checksum)
    before = files(out)
    refused(run("reconstruct", bad, "-o", out / "r.png"), fragment)
    assert files(out) == before


def test_untouched_and_version_1_trajectories_still_load(work, out):
    original = Trajectory.load(work / "photo.traj.safetensors")
    assert original.metadata["format_version"] == FORMAT_VERSION
    old = _rewrite(work / "photo.traj.safetensors", out / "v1.traj.safetensors", checksum=None, version=1)
    loaded = Trajectory.load(old)
    assert torch.equal(loaded.latents, original.latents) and loaded.metadata["prompt"] == SOURCE
    consistent = _rewrite(work / "photo.traj.safetensors", out / "same.traj.safetensors")  # recomputed checksum
    assert Trajectory.load(consistent).metadata == original.metadata

"""Model fingerprints (ddim_edit/fingerprint.py): trajectories replay across dtypes, other weights are
refused, older files keep their own fingerprint."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from ddim_edit.errors import TrajectoryError
from ddim_edit.fingerprint import legacy_fingerprint, signatures_match
from ddim_edit.model import EditModel
from ddim_edit.replay import reconstruct
from ddim_edit.testing import tiny_pipeline
from ddim_edit.trajectory import CHECKSUM_KEY, content_checksum, METADATA_KEY, Trajectory
from tests.cli_helpers import run, SOURCE
from tests.lora_helpers import _invert
from tests.output_helpers import FAST, refused
from tests.output_helpers import photo  # noqa: F401 (pytest fixtures)


def _rounded_copy(pipe, dtype):
    """The pipeline as a GPU run in ``dtype`` sees it: every weight rounded to ``dtype``, back in fp32."""
    twin = copy.deepcopy(pipe)
    with torch.no_grad():
        for module in (twin.unet, twin.vae, twin.text_encoder):
            for param in module.parameters():
                param.copy_(param.to(dtype).float())
    return twin


@pytest.fixture(scope="module")
def base():
    pipe = tiny_pipeline()
    model = EditModel.from_pipeline(pipe, name="tiny")
    return pipe, model, _invert(model)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_trajectory_made_with_rounded_weights_replays_in_fp32(base, dtype, tmp_path):
    pipe, model, _ = base
    gpu_like = EditModel.from_pipeline(_rounded_copy(pipe, dtype), name="tiny")
    traj = _invert(gpu_like)
    traj.metadata["dtype"] = str(dtype).replace("torch.", "")  # as a fp16/bf16 run writes it
    traj.save(tmp_path / "gpu.safetensors")
    loaded = Trajectory.load(tmp_path / "gpu.safetensors")
    assert gpu_like.fingerprint() == model.fingerprint()
    assert signatures_match(loaded.metadata["model_signature"], model.signature())
    back = reconstruct(model, loaded, progress=False)  # fp32, CPU: accepted
    assert torch.isfinite(back).all()


def test_other_weights_are_refused(base):
    pipe, model, traj = base
    other = EditModel.from_pipeline(tiny_pipeline(seed=7), name="tiny")
    with pytest.raises(TrajectoryError, match="other weights"):
        reconstruct(other, traj, progress=False)


def test_weights_changed_in_one_middle_block_are_refused(base):
    """The signature covers every block, not only conv_in / conv_out."""
    pipe, model, traj = base
    tuned = copy.deepcopy(pipe)
    with torch.no_grad():
        for param in tuned.unet.up_blocks[1].attentions.parameters():
            param.mul_(1.03)  # a fine-tune's worth of change in one block
    changed = EditModel.from_pipeline(tuned, name="tiny")
    assert changed.fingerprint() == model.fingerprint()  # same architecture
    with pytest.raises(TrajectoryError, match="other weights"):
        reconstruct(changed, traj, progress=False)


def _as_version_2(traj: Trajectory, path, fingerprint: str):
    """Write ``traj`` as a format-2 file (legacy fingerprint, none of version 3's fields)."""
    from safetensors.torch import save

    traj.save(path)
    raw = path.read_bytes()
    from safetensors.torch import load as load_tensors

    tensors = load_tensors(raw)
    meta = json.loads(json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"][METADATA_KEY])
    for key in ("model_signature", "model_config", "model_family", "loras"):
        meta.pop(key)
    meta.update(format_version=2, model_fingerprint=fingerprint)
    path.write_bytes(save(tensors, metadata={METADATA_KEY: json.dumps(meta), CHECKSUM_KEY: content_checksum(meta, tensors)}))
    return path


def test_version_2_files_are_checked_with_their_own_fingerprint(base, tmp_path):
    _, model, traj = base
    good = Trajectory.load(_as_version_2(traj, tmp_path / "v2.safetensors", legacy_fingerprint(model.denoiser)))
    assert good.metadata["format_version"] == 2
    assert torch.allclose(reconstruct(model, good, progress=False), reconstruct(model, traj, progress=False))
    other = legacy_fingerprint(tiny_pipeline(seed=7).unet)
    bad = Trajectory.load(_as_version_2(traj, tmp_path / "v2-other.safetensors", other))
    with pytest.raises(TrajectoryError, match="other weights"):
        reconstruct(model, bad, progress=False)


def test_same_model_name_with_other_weights_names_the_fingerprints(tmp_path, photo, tiny_pipe):
    from ddim_edit.testing import tiny_pipeline

    model = tmp_path / "model"
    tiny_pipe.save_pretrained(model, safe_serialization=True)
    traj = tmp_path / "t.traj.safetensors"
    result = run("invert", photo, "-p", SOURCE, "--model", model, "--method", "ddim", "-o", traj, *FAST)
    assert result.exit_code == 0, result.output
    shutil.rmtree(model)
    tiny_pipeline(seed=1).save_pretrained(model, safe_serialization=True)  # same folder, other weights
    line = refused(tmp_path, ("reconstruct", traj, "--model", model, "-o", tmp_path / "r.png", "-q"),
                   "fingerprint", "invert the image again")
    assert "not the loaded" not in line

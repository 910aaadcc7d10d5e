"""--model: local folders, single .safetensors files, pickle refusal, unknown models, devices."""

import pytest
import torch

from ddim_edit.errors import ModelLoadError
from ddim_edit.model import load_model, resolve_dtype
from ddim_edit.replay import reconstruct
from tests.lora_helpers import _invert


def test_the_model_reference_is_resolved_to_an_absolute_folder(tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tiny_model_dir.parent)
    model = load_model(tiny_model_dir.name, device="cpu")
    assert model.name == str(tiny_model_dir.resolve())
    traj = _invert(model)
    assert traj.metadata["model"] == str(tiny_model_dir.resolve()) and traj.metadata["model_config"] is None
    monkeypatch.chdir(tmp_path)  # elsewhere: the recorded reference still loads the model
    again = load_model(traj.metadata["model"], device="cpu")
    assert torch.isfinite(reconstruct(again, traj, progress=False)).all()
    assert load_model("toy", device="cpu").name == "toy"


def test_local_folder_loads_offline(tiny_model_dir, tiny_pipe):
    from ddim_edit.model import EditModel
    from ddim_edit.testing import tiny_pipeline

    model = load_model(str(tiny_model_dir), device="cpu")
    assert model.device.type == "cpu" and model.dtype == torch.float32
    for ours, theirs in zip(model.unet.parameters(), tiny_pipe.unet.parameters()):
        assert torch.equal(ours, theirs)
    # the same weights in memory and from disk are the same model for trajectory files
    assert model.fingerprint() == EditModel.from_pipeline(tiny_pipeline(), name="fresh").fingerprint()


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt"])
def test_pickle_checkpoints_need_opt_in(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not really a checkpoint")
    with pytest.raises(ModelLoadError, match="--allow-pickle"):
        load_model(str(path))


def test_unknown_models_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not load model 'nobody/no-such-model'"):
        load_model("nobody/no-such-model")
    with pytest.raises(ModelLoadError, match="not found"):
        load_model("no-such-thing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing.safetensors"))


def test_dtype_rules_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    with pytest.raises(ModelLoadError, match="fp32 on the CPU"):
        resolve_dtype("fp16", cpu)
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        resolve_dtype("fp8", cpu)

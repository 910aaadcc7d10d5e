"""--model (ddim_edit/model.py): local folders, pickle refusal, unknown models, devices, model references, prompts."""

from __future__ import annotations

import shutil

import pytest
import torch

from ddim_edit.errors import ModelLoadError, PromptError
from ddim_edit.model import load_model, resolve_dtype
from ddim_edit.replay import reconstruct
from tests.cli_helpers import run, SOURCE
from tests.lora_helpers import _invert
from tests.output_helpers import FAST, refused
from tests.output_helpers import photo  # noqa: F401 (pytest fixtures)


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
    for ours, theirs in zip(model.denoiser.parameters(), tiny_pipe.unet.parameters()):
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


def test_prompt_length_is_checked_in_the_library(tiny_model):
    with pytest.raises(PromptError, match="tokens long"):
        tiny_model.encode(["a red cat " * 40])
    with pytest.raises(PromptError, match="tokens long"):
        tiny_model.prompt_tokens("a red cat " * 40)
    assert len(tiny_model.encode(["a red cat"])) == 1


def test_a_model_folder_missing_unet_names_the_sub_folder(tmp_path, photo, tiny_model_dir):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    shutil.rmtree(model / "unet")
    line = refused(tmp_path, ("invert", photo, "-p", SOURCE, "--model", model, "-o", tmp_path / "t.traj.safetensors",
                              *FAST), "no unet/ sub-folder")
    assert "config.json" not in line


# ---------------------------------------------------------------------- 10. pickle weights in a folder
def test_a_folder_of_pickle_weights_needs_allow_pickle(tmp_path, photo, tiny_pipe):
    model = tmp_path / "pickled"
    tiny_pipe.save_pretrained(model, safe_serialization=False)
    assert list(model.glob("unet/*.bin")) and not list(model.glob("unet/*.safetensors"))  # (transformers writes safetensors)
    out = tmp_path / "t.traj.safetensors"
    refused(tmp_path, ("invert", photo, "-p", SOURCE, "--model", model, "-o", out, *FAST),
            "pickle", "--allow-pickle")
    allowed = run("invert", photo, "-p", SOURCE, "--model", model, "-o", out, "--allow-pickle", *FAST)
    assert allowed.exit_code == 0 and out.is_file(), allowed.output
    assert allowed.stderr.strip() == "", allowed.stderr  # no "An error occurred while trying to fetch" lines


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_hub_models_are_read_as_safetensors_only_unless_pickles_are_allowed(monkeypatch, allow_pickle):
    from diffusers import StableDiffusionPipeline

    from ddim_edit.errors import ModelLoadError
    from ddim_edit.model import load_model

    seen = {}

    def from_pretrained(name, **kwargs):
        seen.update(kwargs)
        raise OSError("offline")

    from diffusers import DiffusionPipeline

    monkeypatch.setattr(DiffusionPipeline, "load_config",
                        classmethod(lambda cls, name, **kw: {"_class_name": "StableDiffusionPipeline"}))
    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", from_pretrained)
    with pytest.raises(ModelLoadError):
        load_model("someone/some-model", device="cpu", allow_pickle=allow_pickle)
    assert seen.get("use_safetensors") is (None if allow_pickle else True)

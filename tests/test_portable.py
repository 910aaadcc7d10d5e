"""Portable trajectories: model identity independent of dtype and device, older formats, LoRAs, references."""

import copy
import json
import sys

import pytest
import torch

from ddim_edit.errors import ModelLoadError, TrajectoryError
from ddim_edit.fingerprint import legacy_fingerprint, signatures_match
from ddim_edit.inversion import InversionOptions, invert
from ddim_edit.lora import parse_lora
from ddim_edit.model import EditModel, load_model
from ddim_edit.replay import reconstruct
from ddim_edit.schedule import Schedule
from ddim_edit.testing import tiny_pipeline, write_tiny_lora
from ddim_edit.trajectory import CHECKSUM_KEY, METADATA_KEY, Trajectory, content_checksum

PROMPT = "a red circle on a white background"


def _invert(model, steps=4):
    schedule = Schedule.from_scheduler_config(model.scheduler_config, num_steps=steps)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    return invert(model, schedule, z0, PROMPT, InversionOptions(method="exact"), progress=False)


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
    good = Trajectory.load(_as_version_2(traj, tmp_path / "v2.safetensors", legacy_fingerprint(model.unet)))
    assert good.metadata["format_version"] == 2
    assert torch.allclose(reconstruct(model, good, progress=False), reconstruct(model, traj, progress=False))
    other = legacy_fingerprint(tiny_pipeline(seed=7).unet)
    bad = Trajectory.load(_as_version_2(traj, tmp_path / "v2-other.safetensors", other))
    with pytest.raises(TrajectoryError, match="other weights"):
        reconstruct(model, bad, progress=False)


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


# ----------------------------------------------------------------------------- LoRA
@pytest.fixture(scope="module")
def lora_file(tmp_path_factory):
    """A LoRA for the tiny SD model, trained-looking (random, non-zero B) and saved the diffusers way."""
    return write_tiny_lora(tmp_path_factory.mktemp("lora"))


def _unet_output(model):
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        return model.denoise(latents, 500, model.encode([PROMPT]), model.encode_negative([""]), 5.0)


def test_a_fused_lora_equals_the_adapter_at_its_scale(tiny_model_dir, lora_file):
    from diffusers import StableDiffusionPipeline

    fused = load_model(str(tiny_model_dir), device="cpu", loras=[f"{lora_file}:0.5"])
    assert fused.loras == [{"file": lora_file.name, "path": str(lora_file.resolve()), "sha256": fused.loras[0]["sha256"], "scale": 0.5}]
    assert len(fused.loras[0]["sha256"]) == 64
    # independent reference: diffusers' unfused PEFT adapter at weight 0.5
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir), safety_checker=None, requires_safety_checker=False)
    pipe.load_lora_weights(str(lora_file), adapter_name="x")
    pipe.set_adapters(["x"], adapter_weights=[0.5])
    adapter = EditModel.from_pipeline(pipe, name="ref")
    plain = load_model(str(tiny_model_dir), device="cpu")
    assert torch.allclose(_unet_output(fused), _unet_output(adapter), atol=1e-5)
    assert not torch.allclose(_unet_output(fused), _unet_output(plain), atol=1e-3)


def test_replaying_with_other_loras_is_refused(tiny_model_dir, lora_file):
    with_lora = load_model(str(tiny_model_dir), device="cpu", loras=[f"{lora_file}:0.5"])
    traj = _invert(with_lora)
    assert [r["scale"] for r in traj.metadata["loras"]] == [0.5]
    assert torch.isfinite(reconstruct(with_lora, traj, progress=False)).all()
    for loras, said in (([], "no LoRA"), ([f"{lora_file}:1.0"], ":1")):
        other = load_model(str(tiny_model_dir), device="cpu", loras=loras)
        with pytest.raises(TrajectoryError, match="LoRA") as caught:
            reconstruct(other, traj, progress=False)
        assert said in str(caught.value) and "pytorch_lora_weights.safetensors:0.5" in str(caught.value)


@pytest.mark.parametrize("spec,said", [("missing.safetensors", "does not exist"), ("{file}:abc", "must be a number"),
                                       ("{file}:nan", "finite"), ("{pickle}", "not a .safetensors")])
def test_bad_lora_specs_are_refused(spec, said, lora_file, tmp_path):
    pickle = tmp_path / "lora.bin"
    pickle.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=said):
        parse_lora(spec.format(file=lora_file, pickle=pickle))


def test_a_lora_for_another_model_is_refused_in_one_line(tiny_model_dir, tmp_path):
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 999)}, str(wrong))
    with pytest.raises(ModelLoadError, match="could not be loaded") as caught:
        load_model(str(tiny_model_dir), device="cpu", loras=[str(wrong)])
    assert "\n" not in str(caught.value)


def test_a_missing_peft_is_named_in_one_line(tiny_model_dir, lora_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # what `import peft` meets where it is not installed
    with pytest.raises(ModelLoadError, match="needs the peft package") as caught:
        load_model(str(tiny_model_dir), device="cpu", loras=[str(lora_file)])
    assert "\n" not in str(caught.value) and "pip install" in str(caught.value)

"""LoRAs (ddim_edit/lora.py): fused equals the adapter, recorded and checked on replay, bad specs refused."""

import sys

import pytest
import torch

from ddim_edit.errors import ModelLoadError, TrajectoryError
from ddim_edit.lora import parse_lora
from ddim_edit.model import EditModel, load_model
from ddim_edit.replay import reconstruct
from ddim_edit.testing import write_tiny_lora
from tests.lora_helpers import _invert, PROMPT


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

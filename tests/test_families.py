"""Model families: SDXL folders load and run; other families get one line naming them."""

import json
import shutil

import pytest
import torch

from ddim_edit.errors import ModelLoadError
from ddim_edit.families import checkpoint_family, folder_family
from ddim_edit.model import load_model
from ddim_edit.testing import tiny_sdxl_pipeline


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-sdxl"
    tiny_sdxl_pipeline().save_pretrained(path, safe_serialization=True)
    return path


def _with_class(source, dest, class_name, **changes):
    shutil.copytree(source, dest)
    index = json.loads((dest / "model_index.json").read_text())
    index.update(_class_name=class_name, **changes)
    (dest / "model_index.json").write_text(json.dumps(index))
    return dest


def test_an_sdxl_folder_loads_as_sdxl(sdxl_dir):
    model = load_model(str(sdxl_dir), device="cpu")
    assert model.family == "sdxl" and model.text_encoder_2 is not None and model.force_zeros_for_empty_prompt
    assert model.scheduler_config["_class_name"] == "EulerDiscreteScheduler"  # run with DDIM from its betas


@pytest.mark.parametrize("class_name,family", [
    ("Flux2Pipeline", "FLUX.2 [dev]"), ("FluxFillPipeline", "FLUX variant"),
    ("KandinskyV22Pipeline", "Kandinsky"), ("PixArtSigmaPipeline", "PixArt"), ("SomethingNewPipeline", "SomethingNew"),
])
def test_other_families_are_named_and_refused(sdxl_dir, tmp_path, class_name, family):
    folder = _with_class(sdxl_dir, tmp_path / "other", class_name)
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(folder), device="cpu")
    message = str(caught.value)
    assert f"is a {family}" in message and "Stable Diffusion 1.x/2.x, SDXL base" in message and "\n" not in message


def test_the_sdxl_refiner_is_refused(sdxl_dir, tmp_path):
    folder = _with_class(sdxl_dir, tmp_path / "refiner", "StableDiffusionXLImg2ImgPipeline",
                         text_encoder=[None, None], tokenizer=[None, None])
    with pytest.raises(ModelLoadError, match="SDXL refiner"):
        folder_family(folder)


def test_an_sdxl_folder_missing_its_second_encoder_names_it(sdxl_dir, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(sdxl_dir, folder)
    shutil.rmtree(folder / "text_encoder_2")
    with pytest.raises(ModelLoadError, match="text_encoder_2/ sub-folder; an SDXL folder needs"):
        load_model(str(folder), device="cpu")


def test_an_inpainting_unet_is_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "inpaint"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config["in_channels"] = 9
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # weights no longer fit: re-save
    from diffusers import UNet2DConditionModel

    UNet2DConditionModel.from_config(config).save_pretrained(folder / "unet", safe_serialization=True)
    with pytest.raises(ModelLoadError, match="9 input channels"):
        load_model(str(folder), device="cpu")


@pytest.mark.parametrize("key,family", [
    ("conditioner.embedders.0.model.transformer.resblocks.0.ln_1.weight", "SDXL refiner"),
])
def test_single_files_of_other_families_are_refused_from_their_keys(tmp_path, key, family):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({key: torch.zeros(1)}, str(path))
    with pytest.raises(ModelLoadError, match=f"is a {family}"):
        checkpoint_family(path)
    with pytest.raises(ModelLoadError, match=f"is a {family}"):
        load_model(str(path), device="cpu")


def test_single_file_family_from_keys(tmp_path):
    from safetensors.torch import save_file

    sdxl, sd = tmp_path / "xl.safetensors", tmp_path / "sd.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(1)}, str(sdxl))
    save_file({"cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(1)}, str(sd))
    assert checkpoint_family(sdxl) == "sdxl" and checkpoint_family(sd) == "sd"
    for key, family in (("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "sd3"),
                        ("double_blocks.0.img_attn.qkv.weight", "flux")):
        save_file({key: torch.zeros(1)}, str(tmp_path / f"{family}.safetensors"))
        assert checkpoint_family(tmp_path / f"{family}.safetensors") == family
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="not a readable .safetensors"):
        checkpoint_family(tmp_path / "junk.safetensors")


def test_a_config_folder_of_another_family_is_refused(tmp_path, tiny_model_dir):
    from safetensors.torch import save_file

    path = tmp_path / "xl.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ModelLoadError, match="is an SDXL checkpoint but model_config") as caught:
        load_model(str(path), device="cpu", config=str(tiny_model_dir))
    assert "\n" not in str(caught.value)

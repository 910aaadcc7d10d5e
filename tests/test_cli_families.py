"""The commands on SDXL folders and with LoRAs, from any directory."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cli_helpers import one_line_error, run
from ddim_edit.model import assets_dir
from ddim_edit.testing import tiny_sdxl_pipeline, write_tiny_lora
from ddim_edit.trajectory import Trajectory
from tests.output_helpers import photo  # noqa: F401 (pytest fixture: the bundled example in the test's folder)

SOURCE = "a red circle on a white background"
TARGET = "a blue circle on a white background"


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-sdxl"
    tiny_sdxl_pipeline().save_pretrained(path, safe_serialization=True)
    return path


def test_sdxl_through_every_command(sdxl_dir, photo, tmp_path, monkeypatch):
    monkeypatch.chdir(sdxl_dir.parent)  # a relative --model: the trajectory keeps it absolute
    traj = tmp_path / "photo.traj.safetensors"
    result = run("invert", photo, "-p", SOURCE, "--model", sdxl_dir.name, "--steps", 4, "--size", 32, "-o", traj, "-q")
    assert result.exit_code == 0, result.output
    meta = Trajectory.load(traj).metadata
    assert meta["model_family"] == "sdxl" and meta["model"] == str(sdxl_dir.resolve())
    monkeypatch.chdir(tmp_path)  # elsewhere, no --model: the trajectory names its model
    outputs = {
        "reconstruct": run("reconstruct", traj, "-o", tmp_path / "r.png", "-q"),
        "swap": run("swap", traj, "-t", TARGET, "-o", tmp_path / "s.png", "--save-attention", tmp_path / "a.png", "-q"),
        "inpaint": run("inpaint", photo, "--trajectory", traj, "--mask", assets_dir() / "examples" / "red-circle-mask.png",
                       "-o", tmp_path / "i.png", "-q"),
        "style": run("style", "--content", traj, "--style", traj, "-o", tmp_path / "st.png", "-q"),
    }
    for name, outcome in outputs.items():
        assert outcome.exit_code == 0, (name, outcome.output)
    width, height = Image.open(photo).size
    for name in ("r", "s", "i", "st"):
        assert Image.open(tmp_path / f"{name}.png").size == (width, height)  # back at the source's size
    assert np.asarray(Image.open(tmp_path / "a.png")).ndim == 3


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory):
    return write_tiny_lora(tmp_path_factory.mktemp("lora"))


def test_lora_is_recorded_reused_and_checked(tiny_model_dir, lora_file, photo, tmp_path):
    traj = tmp_path / "lora.traj.safetensors"
    result = run("invert", photo, "-p", SOURCE, "--model", tiny_model_dir, "--lora", f"{lora_file}:0.5",
                 "--steps", 3, "-o", traj, "-q", "--format", "json")
    assert result.exit_code == 0, result.output
    records = Trajectory.load(traj).metadata["loras"]
    assert [(r["file"], r["scale"]) for r in records] == [(lora_file.name, 0.5)]
    # the trajectory's own model comes with its LoRA
    assert run("reconstruct", traj, "-o", tmp_path / "r.png", "-q").exit_code == 0
    # naming the model without the LoRA, or another scale, is refused in one line naming the flag to pass
    one_line_error(run("reconstruct", traj, "--model", tiny_model_dir, "-o", tmp_path / "r2.png", "-q"),
                   "LoRA", "no LoRA", f"--lora {lora_file.resolve()}:0.5")
    one_line_error(run("swap", traj, "-t", TARGET, "--model", tiny_model_dir, "--lora", f"{lora_file}:0.9",
                       "-o", tmp_path / "s.png", "-q"), "LoRA", ":0.9")
    assert not (tmp_path / "r2.png").exists() and not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("spec,said", [("nope.safetensors", "--lora file nope.safetensors does not exist"),
                                       ("{lora}:x", "--lora"), ("{bin}", "not a .safetensors")])
def test_bad_lora_flags_are_one_line_errors(spec, said, lora_file, photo, tmp_path):
    binary = tmp_path / "l.bin"
    binary.write_bytes(b"0")
    one_line_error(run("invert", photo, "-p", SOURCE, "--lora", spec.format(lora=lora_file, bin=binary),
                       "--steps", 2, "-o", tmp_path / "t.safetensors"), said)
    assert not (tmp_path / "t.safetensors").exists()


def test_an_unsupported_family_is_one_line(tmp_path, photo, sdxl_dir):
    folder = tmp_path / "flux"
    shutil.copytree(sdxl_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(dict(index, _class_name="Flux2Pipeline")))
    one_line_error(run("invert", photo, "-p", SOURCE, "--model", folder, "-o", tmp_path / "t.safetensors"),
                   "FLUX.2 [dev]", "does not support", "SDXL", "FLUX.2 [klein]")


@pytest.fixture(scope="module", params=["sd3", "flux", "flux2"])
def flow_dir(request, tmp_path_factory):
    from tests.flow_helpers import BUILDERS

    path = tmp_path_factory.mktemp("models") / f"tiny-{request.param}"
    BUILDERS[request.param]().save_pretrained(path, safe_serialization=True)
    return request.param, path


def test_flow_families_through_the_commands(flow_dir, photo, tmp_path):
    """SD3 and FLUX folders through invert, reconstruct, inpaint, swap (with attention pictures), style and
    a batch."""
    family, model = flow_dir
    traj = tmp_path / "photo.traj.safetensors"
    result = run("invert", photo, "-p", SOURCE, "--model", model, "--steps", 4, "--size", 32, "--method", "exact",
                 "-o", traj, "-q")
    assert result.exit_code == 0, result.output
    meta = Trajectory.load(traj).metadata
    assert meta["model_family"] == family and meta["schedule"]["stepper"] == "flow-euler"
    mask = assets_dir() / "examples" / "red-circle-mask.png"
    outputs = {
        "reconstruct": run("reconstruct", traj, "-o", tmp_path / "r.png", "-q"),
        "inpaint": run("inpaint", photo, "--trajectory", traj, "--mask", mask, "-p", TARGET, "-o", tmp_path / "i.png", "-q"),
        "inpaint-image": run("inpaint", photo, "--source-prompt", SOURCE, "--model", model, "--mask", mask, "--steps", 4,
                             "--size", 32, "--resample", 1, "--jump-length", 2, "-o", tmp_path / "i2.png", "-q"),
    }
    for name, outcome in outputs.items():
        assert outcome.exit_code == 0, (name, outcome.output)
    width, height = Image.open(photo).size
    for name in ("r", "i", "i2"):
        assert Image.open(tmp_path / f"{name}.png").size == (width, height)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"edit": "reconstruct", "trajectory": str(traj), "output": "b.png"}) + "\n")
    result = run("batch", jobs, "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "b.png").exists()
    swapped = run("swap", traj, "-t", TARGET, "-o", tmp_path / "s.png", "--save-attention", tmp_path / "a.png", "-q")
    assert swapped.exit_code == 0, swapped.output
    assert Image.open(tmp_path / "s.png").size == (width, height) and np.asarray(Image.open(tmp_path / "a.png")).ndim == 3
    styled = run("style", "--content", traj, "--style", traj, "-o", tmp_path / "st.png", "-q")
    assert styled.exit_code == 0, styled.output
    assert Image.open(tmp_path / "st.png").size == (width, height)
    one_line_error(run("invert", photo, "-p", SOURCE, "--model", model, "--steps", 4, "--spacing", "trailing",
                       "-o", tmp_path / "y.safetensors", "-q"), "flow model", "--steps only")

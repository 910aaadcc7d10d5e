"""Smoke test of the toy model's training code: a few steps end to end, seeded and resumable."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from ddim_edit.toy.train import TrainConfig, main, train


def _config(tmp_path, name: str, **kw) -> TrainConfig:
    settings = dict(vae_steps=2, unet_steps=2, n_train=8, vae_batch=4, unet_batch=4,
                    threads=torch.get_num_threads(), state=str(tmp_path / "state.pt"))
    return TrainConfig(out=str(tmp_path / name), **{**settings, **kw})


def _unet_weights(folder) -> dict:
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_training_is_seeded_resumable_and_saves_a_pipeline(tmp_path):
    log = train(_config(tmp_path, "a"))
    assert (log["vae_steps"], log["unet_steps"]) == (2, 2)
    assert log["cpu_count"] and json.load(open(tmp_path / "a" / "training_log.json"))["unet_steps"] == 2
    pipeline = StableDiffusionPipeline.from_pretrained(tmp_path / "a")
    assert pipeline.vae.config.scaling_factor != 1.0
    assert (tmp_path / "a" / "tokenizer" / "merges.txt").exists()

    train(_config(tmp_path, "b", state=str(tmp_path / "state-b.pt")))  # same seed, fresh state
    first, second = _unet_weights(tmp_path / "a"), _unet_weights(tmp_path / "b")
    assert all(torch.equal(first[k], second[k]) for k in first)

    train(_config(tmp_path, "c", resume=True))  # resumes a's finished state: nothing left to train
    resumed = _unet_weights(tmp_path / "c")
    assert all(torch.equal(first[k], resumed[k]) for k in first)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_training_refuses_to_replace_a_folder_without_force(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "README.md").write_text("an earlier model's card")
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(out), "--vae-steps", "1", "--unet-steps", "1", "--n-train", "4"])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"Error: --out {out} already holds files; pass --force to replace it or choose another --out"]
    assert (out / "README.md").read_text() == "an earlier model's card"

    train(_config(tmp_path, "model", force=True))
    assert (out / "unet").is_dir() and not (out / "README.md").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

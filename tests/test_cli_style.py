"""The ``style`` command (cli/style.py): images and trajectories, bad settings, unreadable style images."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ddim_edit.edits.style import encoder_self_attention, StyleOptions
from ddim_edit.images import load_image, read_parameters, save_png
from tests.cli_helpers import run
from tests.number_helpers import command_line, refused
from tests.number_helpers import out, work  # noqa: F401 (pytest fixtures)
from tests.style_helpers import _picture, STEPS


def _cli(args):
    from cli.main import app

    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_cli_style_images_and_trajectory(tiny_model_dir, tiny_model, tmp_path):
    save_png(tmp_path / "content.png", _picture(0))
    save_png(tmp_path / "style.png", _picture(7, (40, 56)))
    out = tmp_path / "out.png"
    result = _cli(["style", "--content", str(tmp_path / "content.png"), "--style", str(tmp_path / "style.png"),
                   "--model", str(tiny_model_dir), "--steps", str(STEPS), "-o", str(out), "--quiet",
                   "--format", "json", "--grid", "--layers", "up_blocks.1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["unet_evaluations"] == 3 * STEPS and report["gamma"] == StyleOptions.gamma == 0.0
    assert report["structure_layers"] == [layer.name for layer in encoder_self_attention(tiny_model)]
    assert load_image(out).shape[:2] == (32, 32)  # the output alone …
    picture = load_image(tmp_path / "out.grid.png")
    assert picture.shape[0] > 32 and picture.shape[1] > 3 * 32  # … and content | style | output beside it
    assert read_parameters(out)["command"] == "style"
    # the same output exists: refused without --force
    again = _cli(["style", "--content", str(tmp_path / "content.png"), "--style", str(tmp_path / "style.png"),
                  "--model", str(tiny_model_dir), "--steps", str(STEPS), "-o", str(out), "--quiet"])
    assert again.exit_code == 1 and "--force" in again.output
    # a trajectory file for the content side
    invert = _cli(["invert", str(tmp_path / "content.png"), "--unconditional", "--model", str(tiny_model_dir),
                   "--steps", str(STEPS), "--guidance", "1", "-o", str(tmp_path / "c.traj.safetensors"), "--quiet"])
    assert invert.exit_code == 0, invert.output
    traj_out = tmp_path / "traj.png"
    result = _cli(["style", "--content", str(tmp_path / "c.traj.safetensors"), "--style", str(tmp_path / "style.png"),
                   "--model", str(tiny_model_dir), "-o", str(traj_out), "--quiet", "--no-adain", "--gamma", "1",
                   "--temperature", "1"])
    assert result.exit_code == 0, result.output
    assert load_image(traj_out).shape == (32, 32, 3)


@pytest.mark.parametrize("extra,message", [
    (["--gamma", "1.2"], "gamma must be in [0, 1]"),
    (["--temperature", "0"], "temperature must be a positive"),
    (["--layers", "mid_block"], "no decoder self-attention"),
    (["--structure-layers", "up_blocks.1"], "no self-attention layer outside the style layers"),
])
def test_cli_bad_settings(tiny_model_dir, tmp_path, extra, message):
    save_png(tmp_path / "a.png", _picture(0))
    result = _cli(["style", "--content", str(tmp_path / "a.png"), "--style", str(tmp_path / "a.png"),
                   "--model", str(tiny_model_dir), "--steps", "2", "-o", str(tmp_path / "o.png"), "--quiet"] + extra)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_cli_unreadable_style(tiny_model_dir, tmp_path):
    save_png(tmp_path / "a.png", _picture(0))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    result = _cli(["style", "--content", str(tmp_path / "a.png"), "--style", str(tmp_path / "broken.png"),
                   "--model", str(tiny_model_dir), "--steps", "2", "-o", str(tmp_path / "o.png"), "--quiet"])
    assert result.exit_code == 1 and "cannot read" in result.output
    assert not (tmp_path / "o.png").exists()


def test_injection_window_must_be_finite(work, out):
    refused(run(*command_line("style", work, out), "--injection-window", "0", "nan"), "--injection-window", "finite")
    assert not list(out.iterdir())

"""What every command shares (cli/common.py): finite numbers, counts, seeds, devices, sizes, schedule
flags against a trajectory, fields rendered as the running command's flags, grids, trajectory storage.

Every refusal is checked the same way (``refused`` in tests/number_helpers.py): exit code 1 (2 where
click itself rejects a value), exactly one ``Error:`` line on stderr, and no output file created.
Runs on the bundled model at ``--steps 4`` (or less) and 64×64."""

from __future__ import annotations

import re
import shutil

import click
import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import app
from ddim_edit.errors import TrajectoryError
from ddim_edit.model import assets_dir
from ddim_edit.trajectory import Trajectory
from tests.cli_helpers import one_line_error, run, SOURCE, TARGET
from tests.cli_helpers import photo  # noqa: F401 (pytest fixtures)
from tests.number_helpers import _strict_loads, command_line, refused
from tests.number_helpers import out, work  # noqa: F401 (pytest fixtures)


def test_grid_is_written_beside_the_output(tmp_path, photo, tiny_model_dir):
    out = tmp_path / "blue.png"
    args = ["swap", photo, "-s", "a red square", "-t", "a blue square", "--model", tiny_model_dir, "--steps", 3,
            "-o", out, "--grid", "-q"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (48, 40)  # the edit alone, at the source's size
    grid = Image.open(tmp_path / "blue.grid.png")
    assert grid.size[0] > 3 * grid.size[1] / 2  # source | reconstruction | edit, side by side
    from ddim_edit.images import read_parameters

    assert read_parameters(tmp_path / "blue.grid.png")["grid"] == ["source", "reconstruction", "edit"]
    out.unlink()  # the grid alone is still an output that exists: refused before any work
    one_line_error(run(*args), "blue.grid.png already exists", "--force")
    assert not out.exists()


def test_swap_without_a_source_prompt_names_the_flag_it_has(tmp_path, photo, tiny_model_dir):
    result = run("swap", photo, "-t", "a blue square", "--model", tiny_model_dir, "-o", tmp_path / "x.png")
    one_line_error(result, "--source is missing")
    assert "--unconditional" not in result.stderr


# ---------------------------------------------------------------------- 1. non-finite numbers at the door
NON_FINITE = [
    ("invert", "--guidance", "inf"), ("invert", "--guidance", "nan"), ("invert", "--inversion-guidance", "nan"),
    ("invert", "--tolerance", "nan"), ("invert", "--guidance", "-inf"),
    ("reconstruct", "--eta", "nan"), ("reconstruct", "--guidance", "inf"),
    ("swap", "--blend-threshold", "nan"), ("swap", "--self-steps", "inf"), ("swap", "--reweight", "blue=inf"),
    ("swap", "--reweight", "blue=nan"), ("swap", "--cross-steps", "nan"), ("swap", "--cross-steps", "blue=inf"),
    ("swap", "--guidance", "nan"),
    ("inpaint", "--mask-threshold", "nan"), ("inpaint", "--start-step", "inf"), ("inpaint", "--guidance", "nan"),
    ("style", "--gamma", "nan"), ("style", "--temperature", "inf"), ("style", "--guidance", "nan"),
    ("bench", "--guidance", "inf"),
]


@pytest.mark.parametrize("command,flag,value", NON_FINITE)
def test_non_finite_numbers_are_refused(work, out, command, flag, value):
    line = refused(run(*command_line(command, work, out), flag, value), flag.split("=")[0])
    assert "finite" in line
    assert not list(out.iterdir())


def test_every_float_option_of_every_command_is_checked_for_finiteness():
    from cli.common import FiniteFloat

    floats = []
    for name, command in app.commands.items():
        for param in command.params:
            if isinstance(param.type, click.types.FloatParamType):
                floats.append(f"{name} {param.opts[0]}")
            if isinstance(param.type, FiniteFloat):
                floats.append("ok")
    assert floats and set(floats) == {"ok"}, [f for f in floats if f != "ok"]


def _overflowing_denoise(monkeypatch):
    """Every UNet output becomes +inf, as an fp16 overflow does."""
    from ddim_edit.model import EditModel

    original = EditModel.denoise

    def denoise(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        return torch.full_like(output, float("inf"))

    monkeypatch.setattr(EditModel, "denoise", denoise)


def test_overflow_while_sampling_stops_before_saving(work, out, monkeypatch):
    _overflowing_denoise(monkeypatch)
    refused(run("reconstruct", work / "photo.traj.safetensors", "-o", out / "r.png"), "NaN or infinite", "float32")
    refused(run("invert", work / "photo.png", "-p", SOURCE, "--steps", 2, "-o", out / "t.traj.safetensors"),
            "NaN or infinite")
    assert not list(out.iterdir())


# ---------------------------------------------------------------------- 4. image size
@pytest.mark.parametrize("size,codes", [("-64", (1,)), ("0", (1,)), ("8", (1,)), ("15", (1,))])
@pytest.mark.parametrize("command", ["invert", "swap", "inpaint"])
def test_unusable_sizes_are_refused(work, out, command, size, codes):
    args = command_line(command, work, out)
    if command == "swap":  # --size applies to an image input
        args = ["swap", work / "photo.png", "-s", SOURCE, "-t", TARGET, "--steps", 4, "-o", out / "o.png", "-q"]
    refused(run(*args, "--size", size), "--size", codes=codes)
    assert not list(out.iterdir())


def test_smallest_usable_size_works(work, out):
    result = run("invert", work / "photo.png", "-p", SOURCE, "--steps", 2, "--size", 16, "--method", "ddim",
                 "-o", out / "t.traj.safetensors", "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    assert _strict_loads(result.stdout)["size"] == [16, 16]


# ---------------------------------------------------------------------- 5. counts, seeds, devices
@pytest.mark.parametrize("command,args,fragment", [
    ("invert", ["--method", "fixed-point", "--fixed-point-iterations", "0"], "--fixed-point-iterations"),
    ("invert", ["--method", "null-text", "--null-text-steps", "0"], "--null-text-steps"),
    ("invert", ["--steps", "0"], "--steps"),
    ("invert", ["--steps", "-3"], "--steps"),
    ("invert", ["--seed", str(2**64)], "--seed"),
    ("invert", ["--seed", "-1"], "--seed"),
    ("reconstruct", ["--seed", str(10**30)], "--seed"),
    ("bench", ["--seed", "-5"], "--seed"),
    ("bench", ["--n", "0"], "--n"),
    ("bench", ["--steps", "0"], "--steps"),
    ("demo", ["--steps", "-1"], "--steps"),
])
def test_bad_counts_and_seeds_are_refused(work, out, command, args, fragment):
    refused(run(*command_line(command, work, out), *args), fragment)
    assert not list(out.iterdir())


def _absent_devices() -> list[str]:
    from ddim_edit.model import available_devices

    present = available_devices()
    return [device for device in ("mps", "xpu", "cuda", "cuda:7", "cpu:3", "meta", "npu") if device not in present]


@pytest.mark.parametrize("device", _absent_devices())
@pytest.mark.parametrize("command", ["invert", "bench"])
def test_absent_devices_are_refused_naming_those_present(work, out, command, device):
    refused(run(*command_line(command, work, out), "--device", device), "--device", repr(device), "cpu")
    assert not list(out.iterdir())


# ---------------------------------------------------------------------- 9. prompts past the token limit
LONG = SOURCE + " " + " ".join(["with a tiny dot"] * 30)


def test_prompts_over_the_token_limit_are_refused(work, out):
    refused(run("invert", work / "photo.png", "-p", LONG, "--steps", 2, "-o", out / "t.traj.safetensors"),
            "tokens long", "at most 77")
    refused(run("swap", work / "photo.traj.safetensors", "-t", LONG, "-o", out / "s.png"), "tokens long", "77")
    assert not list(out.iterdir())


# ---------------------------------------------------------------------- 10. schedule flags with trajectories
@pytest.mark.parametrize("flag,value", [("--steps", "8"), ("--spacing", "trailing"), ("--timesteps", "900,500,100")])
@pytest.mark.parametrize("command", ["swap", "inpaint", "style"])
def test_schedule_flags_with_a_trajectory_are_refused(work, out, command, flag, value):
    traj = work / "photo.traj.safetensors"
    args = {"swap": ["swap", traj, "-t", TARGET],
            "inpaint": ["inpaint", work / "photo.png", "--mask", work / "mask.png", "--trajectory", traj],
            "style": ["style", "--content", traj, "--style", work / "photo.png"]}[command]
    refused(run(*args, "-o", out / "o.png", flag, value), "has 4 steps", flag, "applies only to images")
    assert not list(out.iterdir())


def test_schedule_flags_that_agree_with_the_trajectory_are_accepted(work, out):
    traj = work / "photo.traj.safetensors"
    timesteps = ",".join(str(t) for t in Trajectory.load(traj).timesteps)
    result = run("swap", traj, "-t", TARGET, "-o", out / "o.png", "--steps", 4, "--spacing", "leading",
                 "--timesteps", timesteps, "-q")
    assert result.exit_code == 0, result.output
    assert (out / "o.png").exists()


@pytest.mark.parametrize("command,field,flag", [
    ("swap", "prompt", "--source"), ("swap", "target_prompt", "--target"), ("swap", "guidance_scale", "--guidance"),
    ("swap", "num_steps", "--steps"), ("inpaint", "source_prompt", "--source-prompt"), ("invert", "prompt", "--prompt"),
    ("invert", "fixed_point_tolerance", "--tolerance"), ("bench", "options", "--set"), ("bench", "count", "--n"),
    ("demo", "mode", None), ("bench", "jump_length", None), ("demo", "device", None), ("reconstruct", "num_steps", None),
])
def test_fields_map_to_the_flags_of_the_running_command(command, field, flag):
    from cli.common import flag_for

    with click.Context(app.commands[command]) as ctx:
        assert flag_for(field, ctx) == flag


def test_library_errors_reach_the_cli_as_flags(work, out):
    refused(run("swap", work / "photo.traj.safetensors", "-s", "a green cat", "-t", TARGET, "-o", out / "o.png"),
            "--source 'a green cat' differs")
    refused(run("invert", work / "photo.png", "-p", SOURCE, "--timesteps", "900,500,500", "-o", out / "t.traj.safetensors"),
            "--timesteps must be strictly descending")
    assert not list(out.iterdir())
    from ddim_edit.edits.prompt_swap import check_source_prompt
    from ddim_edit.trajectory import Trajectory

    with pytest.raises(TrajectoryError, match="^source_prompt 'a green cat' differs"):  # the library's own words
        check_source_prompt(Trajectory.load(work / "photo.traj.safetensors"), "a green cat")


@pytest.mark.parametrize("args", [["demo", "--steps", "2", "--target", "a blue circle", "-q"],
                                  ["bench", "inpaint", "--n", "1", "--steps", "2", "-q"]])
def test_hints_name_only_flags_the_command_has(out, monkeypatch, args):
    monkeypatch.chdir(out)
    line = refused(run(*args))
    flags = {opt for param in app.commands[args[0]].params for opt in param.opts}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line))
    assert named <= flags, f"{args[0]} has no {sorted(named - flags)}: {line}"


def test_a_bad_number_is_the_only_line_on_stderr(out):
    """click prints its usage above a bad parameter; ours prints the one Error: line alone."""
    result = run("invert", out / "missing.png", "-p", "a red circle", "--guidance", "inf", "-q")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: Invalid value for '--guidance': 'inf' is not a finite number; e.g. --guidance 7.5"]


def test_float16_storage_from_invert_and_swap(tmp_path):
    photo = tmp_path / "photo.png"
    shutil.copy(assets_dir() / "examples" / "red-circle.png", photo)
    files = {}
    for storage in ("float64", "float16"):
        files[storage] = tmp_path / f"{storage}.traj.safetensors"
        result = run("invert", photo, "-p", SOURCE, "--steps", 10, "--trajectory-storage", storage, "-o", files[storage], "-q")
        assert result.exit_code == 0, result.output
    assert Trajectory.load(files["float16"]).metadata.get("storage") == "float16"
    assert files["float16"].stat().st_size < 0.6 * files["float64"].stat().st_size
    pictures = {}
    for storage, path in files.items():
        out = tmp_path / f"{storage}.png"
        assert run("reconstruct", path, "-o", out, "-q").exit_code == 0
        pictures[storage] = np.asarray(Image.open(out)).astype(int)
    assert np.abs(pictures["float16"] - pictures["float64"]).max() <= 2  # x_T and corrections kept: same replay
    saved = tmp_path / "swap.traj.safetensors"
    result = run("swap", photo, "-s", SOURCE, "-t", "a solid blue circle on a white background", "--steps", 6,
                 "--save-trajectory", saved, "--trajectory-storage", "float16", "-o", tmp_path / "s.png", "-q")
    assert result.exit_code == 0, result.output
    assert Trajectory.load(saved).metadata.get("storage") == "float16"

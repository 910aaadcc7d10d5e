"""Outputs (ddim_edit/io.py): default names, suffixes, folders, unwritable places, full disks, what was written.

Every refusal here is one ``Error:`` line on stderr, exit code 1, no traceback, and leaves the
folder exactly as it was (``refused`` in tests/output_helpers.py). Runs on the bundled toy model
(64×64) with 4 steps."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ddim_edit.io import default_output
from ddim_edit.model import assets_dir
from tests.cli_helpers import one_line_error, run, SOURCE, TARGET
from tests.output_helpers import FAST, refused, snapshot
from tests.output_helpers import mask, photo  # noqa: F401 (pytest fixtures)


def test_an_output_inside_a_file_is_called_a_file(tmp_path):
    photo = tmp_path / "red-circle.png"
    shutil.copy(assets_dir() / "examples" / "red-circle.png", photo)
    one_line_error(run("invert", photo, "-p", SOURCE, "-o", photo / "r.traj.safetensors"), "is a file, not a folder")


@pytest.fixture(scope="module")
def toy_trajectory(tmp_path_factory) -> Path:
    """The example inverted with the bundled model, 4 steps (copy it before use: tests snapshot their folder)."""
    folder = tmp_path_factory.mktemp("traj")
    shutil.copy(assets_dir() / "examples" / "red-circle.png", folder / "photo.png")
    path = folder / "photo.traj.safetensors"
    result = run("invert", folder / "photo.png", "-p", SOURCE, "-o", path, "--method", "ddim", *FAST)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture()
def trajectory(tmp_path, toy_trajectory) -> Path:
    path = tmp_path / "photo.traj.safetensors"
    shutil.copy(toy_trajectory, path)
    return path


# ---------------------------------------------------------------------- 2. outputs compared up front
@pytest.mark.parametrize("case", ["trajectory_is_output", "attention_is_output", "same_file_other_spelling",
                                  "invert_onto_input", "inpaint_onto_mask", "reconstruct_onto_input",
                                  "style_onto_style"])
def test_outputs_that_name_the_same_file_are_refused_up_front(tmp_path, photo, mask, trajectory, case):
    (tmp_path / "sub").mkdir()
    swap = ("swap", photo, "-s", SOURCE, "-t", TARGET, *FAST)
    args, fragments = {
        "trajectory_is_output": ((*swap, "--save-trajectory", tmp_path / "s.png", "-o", tmp_path / "s.png"),
                                 ("--save-trajectory", "-o", "same file")),
        "attention_is_output": ((*swap, "--save-attention", tmp_path / "s.png", "-o", tmp_path / "s.png"),
                                ("--save-attention", "-o", "same file")),
        "same_file_other_spelling": ((*swap, "-o", tmp_path / "s.png", "--save-attention", f"{tmp_path}/sub/../s.png"),
                                     ("same file",)),
        # --force allows overwriting outputs, never an input of the same command
        "invert_onto_input": (("invert", photo, "-p", SOURCE, "-o", photo, "--force", *FAST), ("input",)),
        "inpaint_onto_mask": (("inpaint", photo, "--mask", mask, "--source-prompt", SOURCE, "-o", mask, "--force",
                               *FAST), ("input",)),
        "reconstruct_onto_input": (("reconstruct", trajectory, "-o", trajectory, "--force", "-q"), ("input",)),
        "style_onto_style": (("style", "--content", photo, "--style", mask, "-o", mask, "--force", *FAST), ("input",)),
    }[case]
    refused(tmp_path, args, *fragments)


# ---------------------------------------------------------------------- 3. default output names
@pytest.mark.parametrize("source, suffix, expected", [
    ("scene.a.png", ".swap.png", "scene.a.swap.png"),
    ("scene.b.png", ".inpaint.png", "scene.b.inpaint.png"),
    ("scan.2024.01.png", ".traj.safetensors", "scan.2024.01.traj.safetensors"),
    ("scan.2024.01.traj.safetensors", ".recon.png", "scan.2024.01.recon.png"),
    ("plain.safetensors", ".swap.png", "plain.swap.png"),
    ("v1.2/photo", ".inpaint.png", "v1.2/photo.inpaint.png"),
])
def test_default_output_keeps_dotted_stems(source, suffix, expected):
    assert default_output(source, suffix) == Path(expected)


def test_commands_use_the_dotted_default_names(tmp_path, mask):
    scan = tmp_path / "scan.2024.01.png"
    shutil.copy(assets_dir() / "examples" / "red-circle.png", scan)
    assert run("invert", scan, "-p", SOURCE, "--method", "ddim", *FAST).exit_code == 0
    traj = tmp_path / "scan.2024.01.traj.safetensors"
    assert traj.is_file()
    assert run("reconstruct", traj, "-q").exit_code == 0
    assert run("swap", traj, "-t", TARGET, "-q").exit_code == 0
    for name in ("scene.a.png", "scene.b.png"):  # once both became scene.inpaint.png
        shutil.copy(scan, tmp_path / name)
        result = run("inpaint", tmp_path / name, "--mask", mask, "--source-prompt", SOURCE, *FAST)
        assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.iterdir()} == {
        "mask.png", "scan.2024.01.png", "scan.2024.01.traj.safetensors", "scan.2024.01.recon.png",
        "scan.2024.01.swap.png", "scene.a.png", "scene.b.png", "scene.a.inpaint.png", "scene.b.inpaint.png"}


# ---------------------------------------------------------------------- 4. interrupted after an output
@pytest.mark.parametrize("stop", ["interrupt", "error"])
def test_a_stop_after_an_output_names_what_was_written(tmp_path, photo, monkeypatch, stop):
    import ddim_edit.jobs.swap as swap_job
    from ddim_edit.errors import PromptError

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt if stop == "interrupt" else PromptError("the edit failed")

    monkeypatch.setattr(swap_job, "swap", stopped)  # the swap command runs through the job layer
    traj, out = tmp_path / "kept.safetensors", tmp_path / "edit.png"
    result = run("swap", photo, "-s", SOURCE, "-t", TARGET, "--save-trajectory", traj, "-o", out, *FAST)
    assert traj.is_file() and not out.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert str(traj) in lines[0] and "no output was written" not in lines[0], lines[0]
    if stop == "interrupt":
        assert result.exit_code == 130 and lines[0].startswith("Interrupted"), result.output
    else:
        assert result.exit_code == 1 and lines[0].startswith("Error: the edit failed"), result.output


def test_the_written_note_stays_one_short_line(tmp_path):
    from cli.common import written_note
    from ddim_edit.io import atomic_write, reset_written

    reset_written()
    assert written_note() == ""
    for index in range(5):
        atomic_write(tmp_path / f"grid-{index}.png", b"x")
    note = written_note()
    reset_written()
    assert note.startswith(f"already wrote {tmp_path / 'grid-0.png'}, ") and note.endswith(" and 2 more"), note


def test_an_interrupt_before_any_output_says_so(tmp_path, photo, monkeypatch):
    import ddim_edit.jobs.resolve as resolve

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(resolve, "invert_image", interrupted)  # the swap command inverts through the job layer
    before = snapshot(tmp_path)
    result = run("swap", photo, "-s", SOURCE, "-t", TARGET, "--save-trajectory", tmp_path / "t.safetensors", *FAST)
    assert result.exit_code == 130 and result.stderr.strip() == "Interrupted; no output was written.", result.output
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------- 5. unwritable, disk full
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("command", ["invert", "reconstruct", "swap", "inpaint", "style", "demo"])
def test_an_unwritable_folder_is_refused_before_the_work(tmp_path, photo, mask, trajectory, command):
    args = {
        "invert": ("invert", photo, "-p", SOURCE, "-o", "/proc/r.traj.safetensors", *FAST),
        "reconstruct": ("reconstruct", trajectory, "-o", "/proc/r.png", "-q"),
        "swap": ("swap", photo, "-s", SOURCE, "-t", TARGET, "-o", "/proc/r.png", *FAST),
        "inpaint": ("inpaint", photo, "--mask", mask, "--source-prompt", SOURCE, "-o", "/proc/r.png", *FAST),
        "style": ("style", "--content", photo, "--style", photo, "-o", "/proc/r.png", *FAST),
        "demo": ("demo", "-o", "/proc/r.png", *FAST),
    }[command]
    refused(tmp_path, args, "cannot write to folder /proc")


@pytest.mark.parametrize("command", ["invert", "reconstruct"])
def test_disk_full_is_one_line_and_leaves_nothing(tmp_path, photo, trajectory, monkeypatch, command):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    args = {"invert": ("invert", photo, "-p", SOURCE, "-o", tmp_path / "t.traj.safetensors", *FAST),
            "reconstruct": ("reconstruct", trajectory, "-o", tmp_path / "r.png", "-q")}[command]
    refused(tmp_path, args, os.strerror(errno.ENOSPC), "free some disk space")


# ---------------------------------------------------------------------- 6. output formats
@pytest.mark.parametrize("suffix, image_format", [(".png", "PNG"), (".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")])
def test_image_outputs_are_written_in_the_format_their_suffix_names(tmp_path, trajectory, suffix, image_format):
    from ddim_edit.images import read_parameters

    out = tmp_path / f"r{suffix}"
    result = run("reconstruct", trajectory, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    with Image.open(out) as handle:
        assert handle.format == image_format and handle.size == (64, 64)
    if image_format != "WEBP":
        assert read_parameters(out)["command"] == "reconstruct"


@pytest.mark.parametrize("case", ["unknown_image_suffix", "no_suffix", "trajectory_as_png", "save_trajectory_as_pt",
                                  "attention_as_gif"])
def test_output_suffixes_that_cannot_be_honoured_are_refused_up_front(tmp_path, photo, trajectory, case):
    swap = ("swap", photo, "-s", SOURCE, "-t", TARGET, *FAST)
    args, fragments = {
        "unknown_image_suffix": (("reconstruct", trajectory, "-o", tmp_path / "r.xyz", "-q"), (".png", ".jpg", ".webp")),
        "no_suffix": ((*swap, "-o", tmp_path / "result"), (".png",)),
        "trajectory_as_png": (("invert", photo, "-p", SOURCE, "-o", tmp_path / "t.png", *FAST), (".safetensors",)),
        "save_trajectory_as_pt": ((*swap, "--save-trajectory", tmp_path / "t.pt"), ("--save-trajectory", ".safetensors")),
        "attention_as_gif": ((*swap, "--save-attention", tmp_path / "maps.gif"), ("--save-attention", ".png")),
    }[case]
    refused(tmp_path, args, *fragments)


@pytest.mark.parametrize("command", ["invert", "reconstruct", "swap", "demo"])
def test_a_folder_given_as_output_is_called_a_folder(tmp_path, photo, trajectory, command):
    folder = tmp_path / "results"
    folder.mkdir()
    args = {"invert": ("invert", photo, "-p", SOURCE, "-o", folder, *FAST),
            "reconstruct": ("reconstruct", trajectory, "-o", folder, "-q"),
            "swap": ("swap", photo, "-s", SOURCE, "-t", TARGET, "-o", folder, *FAST),
            "demo": ("demo", "-o", folder, *FAST)}[command]
    line = refused(tmp_path, args, "is a folder")
    assert "already exists" not in line and "--force" not in line


# ---------------------------------------------------------------------- 8. huge working sizes
@pytest.mark.parametrize("command", ["invert", "swap", "inpaint"])
def test_a_huge_size_is_refused_not_a_memory_error(tmp_path, photo, mask, monkeypatch, command):
    import ddim_edit.workflow as workflow

    real_resize = workflow.resize_rgb

    def guarded_resize(image, size):  # a regression fails here instead of allocating tens of GB
        assert max(size) <= 4096, f"resize to {size} attempted"
        return real_resize(image, size)

    monkeypatch.setattr(workflow, "resize_rgb", guarded_resize)
    out = tmp_path / ("t.traj.safetensors" if command == "invert" else "o.png")
    args = {"invert": ("invert", photo, "-p", SOURCE),
            "swap": ("swap", photo, "-s", SOURCE, "-t", TARGET),
            "inpaint": ("inpaint", photo, "--mask", mask, "--source-prompt", SOURCE)}[command]
    refused(tmp_path, (*args, "--size", "100000", "-o", out, *FAST), "100000", "4096")

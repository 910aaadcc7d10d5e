"""Issue 10, part A: outputs, files and messages.

Every refusal here is one ``Error:`` line on stderr, exit code 1, no traceback, and leaves the
folder exactly as it was (no file created, changed or lost). Runs on the bundled toy model (64×64)
with 4 steps, and on tiny pipelines built in code.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddim_edit.io import default_output
from ddim_edit.model import assets_dir
from tests.cli_helpers import run

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "a solid red circle on a white background"
TARGET = "a solid blue circle on a white background"
FAST = ("--steps", "4", "-q")


# ---------------------------------------------------------------------- helpers
def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (hidden ones and leftovers included) and folder under ``folder`` with its bytes."""
    return {path.relative_to(folder).as_posix(): (path.read_bytes() if path.is_file() else None)
            for path in sorted(folder.rglob("*"))}


def single_error(result, *fragments: str) -> str:
    """Exit code 1 and stderr is exactly one line, starting with ``Error:``, holding ``fragments``."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def refused(tmp_path: Path, args, *fragments: str) -> str:
    """Run ``args``; it must be a one-line error that leaves ``tmp_path`` untouched."""
    before = snapshot(tmp_path)
    line = single_error(run(*args), *fragments)
    assert snapshot(tmp_path) == before, "the refused command created, changed or removed a file"
    return line


def write_huge_png(path: Path, width: int, height: int) -> None:
    """A valid 1-bit PNG of ``width``×``height`` white pixels, compressed while it is generated (tiny file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    block = row * 1000
    body = b"".join(packer.compress(block) for _ in range(height // 1000))
    body += packer.compress(row * (height % 1000)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.fixture()
def photo(tmp_path) -> Path:
    """The bundled 64×64 example, copied into the test's folder."""
    path = tmp_path / "photo.png"
    shutil.copy(assets_dir() / "examples" / "red-circle.png", path)
    return path


@pytest.fixture()
def mask(tmp_path) -> Path:
    path = tmp_path / "mask.png"
    values = np.zeros((64, 64), np.uint8)
    values[16:48, 16:48] = 255
    Image.fromarray(values).save(path)
    return path


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


# ---------------------------------------------------------------------- 1. bench --out
def test_bench_does_not_overwrite_grids_without_force(tmp_path):
    out = tmp_path / "grids"
    out.mkdir()
    earlier = out / "recon-0000-ddim.png"
    earlier.write_bytes(b"results of an earlier run")
    args = ("bench", "recon", "--n", "1", "--steps", "4", "--method", "ddim", "--out", out, "-q")
    refused(tmp_path, args, "recon-0000-ddim.png", "already exist", "--force")
    forced = run(*args, "--force")
    assert forced.exit_code == 0, forced.output
    assert Image.open(earlier).format == "PNG"  # replaced by this run's grid


def test_bench_out_that_is_a_file(tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    refused(tmp_path, ("bench", "recon", "--n", "1", "--steps", "4", "--out", existing, "-q"),
            "is a file, not a folder")


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
    import ddim_edit.jobs.edits as edits
    from ddim_edit.errors import PromptError

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt if stop == "interrupt" else PromptError("the edit failed")

    monkeypatch.setattr(edits, "swap", stopped)  # the swap command runs through the job layer
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
    import ddim_edit.jobs.edits as edits

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(edits, "invert_image", interrupted)  # the swap command inverts through the job layer
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


# ---------------------------------------------------------------------- 7. messages that said the wrong thing
@pytest.mark.parametrize("case", ["invert_image", "swap_image", "style_content", "inpaint_image", "inpaint_mask"])
def test_a_folder_given_as_an_input_file_is_called_a_folder(tmp_path, photo, mask, case):
    folder = tmp_path / "pictures.png"
    folder.mkdir()
    args = {
        "invert_image": ("invert", folder, "-p", SOURCE, "-o", tmp_path / "t.traj.safetensors", *FAST),
        "swap_image": ("swap", folder, "-s", SOURCE, "-t", TARGET, "-o", tmp_path / "o.png", *FAST),
        "style_content": ("style", "--content", folder, "--style", photo, "-o", tmp_path / "o.png", *FAST),
        "inpaint_image": ("inpaint", folder, "--mask", mask, "--source-prompt", SOURCE, "-o", tmp_path / "o.png", *FAST),
        "inpaint_mask": ("inpaint", photo, "--mask", folder, "--source-prompt", SOURCE, "-o", tmp_path / "o.png", *FAST),
    }[case]
    line = refused(tmp_path, args, "is a folder")
    assert "does not exist" not in line


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


@pytest.mark.parametrize("role", ["image", "mask"])
def test_a_valid_400_megapixel_png_is_too_large_not_corrupt(tmp_path, photo, role):
    big = tmp_path / "big.png"
    write_huge_png(big, 20_000, 20_000)
    assert big.stat().st_size < 200_000
    args = {"image": ("invert", big, "-p", SOURCE, "-o", tmp_path / "t.traj.safetensors", *FAST),
            "mask": ("inpaint", photo, "--mask", big, "--source-prompt", SOURCE, "-o", tmp_path / "o.png", *FAST)}[role]
    line = refused(tmp_path, args, "20000x20000", "400 megapixels", "40-megapixel limit", "resize")
    assert "corrupt" not in line  # and no DecompressionBombWarning before it: refused() wants one stderr line


def test_same_model_name_with_other_weights_names_the_fingerprints(tmp_path, photo, tiny_pipe):
    from ddim_edit.testing import tiny_pipeline

    model = tmp_path / "model"
    tiny_pipe.save_pretrained(model, safe_serialization=True)
    traj = tmp_path / "t.traj.safetensors"
    result = run("invert", photo, "-p", SOURCE, "--model", model, "--method", "ddim", "-o", traj, *FAST)
    assert result.exit_code == 0, result.output
    shutil.rmtree(model)
    tiny_pipeline(seed=1).save_pretrained(model, safe_serialization=True)  # same folder, other weights
    line = refused(tmp_path, ("reconstruct", traj, "--model", model, "-o", tmp_path / "r.png", "-q"),
                   "fingerprint", "invert the image again")
    assert "not the loaded" not in line


def test_a_model_folder_missing_unet_names_the_sub_folder(tmp_path, photo, tiny_model_dir):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    shutil.rmtree(model / "unet")
    line = refused(tmp_path, ("invert", photo, "-p", SOURCE, "--model", model, "-o", tmp_path / "t.traj.safetensors",
                              *FAST), "no unet/ sub-folder")
    assert "config.json" not in line


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


# ---------------------------------------------------------------------- 9. packaging
def _build_wheel(tmp_path: Path) -> Path:
    """Build the project's wheel from a copy of the sources (no build/ or egg-info in the checkout)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ddim_edit", "cli", "benchmarks", "assets"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    dist = tmp_path / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", ".", "-w", str(dist)], cwd=source, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = dist.glob("ddim_edit-*.whl")
    return wheel


def test_the_wheel_carries_the_bundled_model_and_examples(tmp_path):
    import zipfile

    names = set(zipfile.ZipFile(_build_wheel(tmp_path)).namelist())
    model = assets_dir() / "toy-model"
    for path in model.rglob("*"):
        if path.is_file():
            assert f"ddim_edit/assets/toy-model/{path.relative_to(model).as_posix()}" in names
    assert "ddim_edit/assets/examples/red-circle.png" in names
    assert "ddim_edit/model.py" in names and "cli/main.py" in names


@pytest.mark.slow
def test_a_non_editable_install_runs_the_demo(tmp_path):
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DDIM_EDIT_ASSETS", "PYTHONPATH")}
    env["HF_HUB_OFFLINE"] = "1"
    where = subprocess.run([str(python), "-c", "import ddim_edit.model as m; print(m.__file__); print(m.assets_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    module, assets = where.stdout.split()
    assert module.startswith(str(venv)) and assets.startswith(str(venv)), where.stdout  # the installed copy
    done = subprocess.run([str(venv / "bin" / "ddim-edit"), "demo", "-o", str(elsewhere / "d.png"), "--steps", "4", "-q"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert Image.open(elsewhere / "d.png").format == "PNG"


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

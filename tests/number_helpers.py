"""Helpers for the CLI's refusals of bad numbers and trajectories on the bundled model (issue 10, part B).

Every refusal is checked the same way (:func:`refused`): exit code 1 (2 where click itself rejects a
value), exactly one ``Error:`` line on stderr, no exception other than the CLI's own exit, and no
output file created. Runs on the bundled model at ``--steps 4`` (or less) and 64×64."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ddim_edit.model import assets_dir
from tests.cli_helpers import SOURCE, TARGET, run



def refused(result, *fragments, codes=(1,)) -> str:
    """The one-line error contract; returns the ``Error:`` line."""
    assert result.exit_code in codes, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    print(result.exit_code, lines[0])  # shown with pytest -s
    return lines[0]


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with the example photo, its mask and its 4-step exact trajectory (made by the CLI)."""
    folder = tmp_path_factory.mktemp("reliability")
    shutil.copy(assets_dir() / "examples" / "red-circle.png", folder / "photo.png")
    shutil.copy(assets_dir() / "examples" / "red-circle-mask.png", folder / "mask.png")
    result = run("invert", folder / "photo.png", "-p", SOURCE, "--steps", 4, "-o", folder / "photo.traj.safetensors", "-q")
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture()
def out(tmp_path):
    """An empty folder for outputs; the test checks it stays empty."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def command_line(command: str, work: Path, out: Path) -> list:
    """A valid command line for ``command`` writing into ``out`` (options are appended to it)."""
    traj = work / "photo.traj.safetensors"
    return {
        "invert": ["invert", work / "photo.png", "-p", SOURCE, "--steps", 4, "-o", out / "o.traj.safetensors", "-q"],
        "reconstruct": ["reconstruct", traj, "-o", out / "o.png", "-q"],
        "swap": ["swap", traj, "-t", TARGET, "-o", out / "o.png", "-q"],
        "inpaint": ["inpaint", work / "photo.png", "--mask", work / "mask.png", "--source-prompt", SOURCE, "--steps", 4,
                    "-o", out / "o.png", "-q"],
        "style": ["style", "--content", work / "photo.png", "--style", work / "photo.png", "--steps", 4,
                  "-o", out / "o.png", "-q"],
        "bench": ["bench", "recon", "--n", 1, "--steps", 2, "--method", "ddim", "--out", out / "grids", "-q"],
        "demo": ["demo", "--steps", 4, "-o", out / "o.png", "-q"],
    }[command]


# ---------------------------------------------------------------------- 3. strict JSON
def _strict_loads(text: str):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)

"""Helpers for the CLI's refusals about outputs, files and messages (issue 10, part A).

Every refusal is one ``Error:`` line on stderr, exit code 1, no traceback, and leaves the
folder exactly as it was (no file created, changed or lost). Runs on the bundled toy model (64×64)
with 4 steps, and on tiny pipelines built in code."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddim_edit.model import assets_dir
from tests.cli_helpers import run



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

"""Helpers for CLI tests: run the click app, check the one-line error contract, the toy model's prompts."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import app

# The bundled toy model's caption of the example red-circle.png, and the swap to blue.
SOURCE = "a solid red circle on a white background"
TARGET = "a solid blue circle on a white background"


def run(*args):
    """Invoke ``ddim-edit`` with ``args`` (any objects, stringified) through click's CliRunner."""
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments):
    """Exit code 1, exactly one ``Error:`` line on stderr containing ``fragments``, no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_box_photo(path, shape=(40, 48), box=(8, 30, 10, 34)):
    """A grey RGB picture of ``shape`` (height, width) with a red box (rows ``box[0]:box[1]``, columns
    ``box[2]:box[3]``), written to ``path``; returns the path."""
    image = np.full((*shape, 3), 240, np.uint8)
    image[box[0]:box[1], box[2]:box[3]] = (200, 40, 40)
    Image.fromarray(image).save(path)
    return path


@pytest.fixture()
def photo(tmp_path):
    return write_box_photo(tmp_path / "photo.png")

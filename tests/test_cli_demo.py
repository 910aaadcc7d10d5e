"""The ``demo`` command (cli/demo.py): the edit and its grid, and hints naming only flags demo has."""

from __future__ import annotations

from tests.cli_helpers import one_line_error, run


def test_demo_writes_the_edit_and_its_grid(tmp_path):
    from ddim_edit.images import load_image
    from ddim_edit.toy.reader import read_scene

    out = tmp_path / "demo.png"
    result = run("demo", "-o", out, "--steps", 20, "-q")
    assert result.exit_code == 0, result.output
    edit = read_scene(load_image(out))
    assert (edit.color, edit.shape, edit.fill, edit.background) == ("blue", "circle", "solid", "white")
    assert load_image(tmp_path / "demo.grid.png").shape[0] >= 192  # enlarged to be read
    one_line_error(run("demo", "-o", out, "--steps", 20, "-q"), "already exists")


def test_demo_hint_names_only_flags_demo_has(tmp_path):
    result = run("demo", "--target", "a big solid blue circle on a white background", "--steps", "1", "-q",
                 "-o", tmp_path / "d.png")
    one_line_error(result, "--target", "ddim-edit swap")
    assert "--mode" not in result.stderr

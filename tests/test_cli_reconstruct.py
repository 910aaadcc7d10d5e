"""The ``reconstruct`` command (cli/reconstruct.py): the trajectory's model by default, bad trajectories."""

import numpy as np
from PIL import Image

from tests.cli_helpers import one_line_error, run
from tests.cli_helpers import photo  # noqa: F401 (pytest fixtures)


def test_reconstruct_uses_the_trajectory_model_by_default(tmp_path, photo, tiny_model_dir):
    traj = tmp_path / "t.traj.safetensors"
    assert run("invert", photo, "-p", "a cat", "--model", tiny_model_dir, "--steps", "3", "-o", traj, "-q").exit_code == 0
    result = run("reconstruct", traj, "-o", tmp_path / "r.png", "-q")
    assert result.exit_code == 0, result.output
    outputs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        result = run("reconstruct", traj, "-o", tmp_path / f"{name}.png", "-q", "--eta", "1", "--seed", seed)
        assert result.exit_code == 0, result.output
        outputs.append(np.asarray(Image.open(tmp_path / f"{name}.png")))
    assert (outputs[0] == outputs[1]).all() and not (outputs[0] == outputs[2]).all()
    one_line_error(run("reconstruct", traj, "-o", tmp_path / "d.png", "--eta", "-1"), "--eta")


def test_reconstruct_bad_trajectories(tmp_path, photo, tiny_model_dir):
    bad = tmp_path / "bad.traj.safetensors"
    bad.write_bytes(b"garbage")
    one_line_error(run("reconstruct", bad, "--model", tiny_model_dir, "-o", tmp_path / "r.png"), "corrupt")
    one_line_error(run("reconstruct", tmp_path / "none.traj.safetensors", "-o", tmp_path / "r.png"), "does not exist")
    # made with another model
    traj = tmp_path / "t.traj.safetensors"
    assert run("invert", photo, "-p", "a cat", "--model", tiny_model_dir, "--steps", "3", "-o", traj, "-q").exit_code == 0
    from ddim_edit.testing import tiny_pipeline

    other = tmp_path / "other-model"
    tiny_pipeline(seed=9).save_pretrained(other)
    one_line_error(run("reconstruct", traj, "--model", other, "-o", tmp_path / "r.png"), "made with model")

"""The reconstruct edit's job (ddim_edit/jobs/reconstruct.py)."""

from __future__ import annotations

import json

from tests.batch_helpers import photos  # noqa: F401 (pytest fixtures)


def test_a_reconstruction_names_its_trajectory_only_when_it_replayed_one(photos, tmp_path):
    from ddim_edit.images import read_parameters
    from tests.cli_helpers import run

    jobs = [{"edit": "invert", "image": "photo.png", "prompt": "a solid red circle on a white background", "steps": 3,
             "output": "photo.traj.safetensors"},
            {"edit": "reconstruct", "image": "photo.png", "prompt": "a solid red circle on a white background",
             "steps": 3, "output": "from-image.png"}]
    (photos / "r.jsonl").write_text("".join(json.dumps(job) + "\n" for job in jobs))
    assert run("batch", photos / "r.jsonl", "--out", tmp_path / "out", "-q").exit_code == 0
    (photos / "t.jsonl").write_text(json.dumps({"edit": "reconstruct", "trajectory": str(tmp_path / "out" / "photo.traj.safetensors"),
                                                "output": "from-trajectory.png"}) + "\n")
    assert run("batch", photos / "t.jsonl", "--out", tmp_path / "out", "-q").exit_code == 0
    assert read_parameters(tmp_path / "out" / "from-image.png")["trajectory"] is None  # it was an image
    assert read_parameters(tmp_path / "out" / "from-trajectory.png")["trajectory"] == str(tmp_path / "out" / "photo.traj.safetensors")

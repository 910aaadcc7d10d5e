"""Helpers for the batch tests: a folder of photos and manifests of jobs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ddim_edit.model import assets_dir
from tests.cli_helpers import SOURCE, TARGET



@pytest.fixture()
def photos(tmp_path) -> Path:
    """A 451×300 photo, its mask, a style image and a corrupt file, in their own folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    examples = assets_dir() / "examples"
    Image.open(examples / "red-circle.png").convert("RGB").resize((451, 300), Image.LANCZOS).save(folder / "photo.png")
    Image.open(examples / "red-circle-mask.png").convert("L").resize((451, 300), Image.NEAREST).save(folder / "mask.png")
    shutil.copy(examples / "striped-blue-star.png", folder / "star.png")
    (folder / "broken.png").write_text("not an image")
    return folder


def six_jobs() -> list[dict]:
    """Every edit once, and one job whose image is corrupt."""
    return [
        {"edit": "invert", "image": "photo.png", "prompt": SOURCE, "steps": 4, "output": "photo.traj.safetensors"},
        {"edit": "reconstruct", "image": "photo.png", "prompt": SOURCE, "steps": 4},
        {"edit": "swap", "image": "photo.png", "source_prompt": SOURCE, "target_prompt": TARGET, "steps": 4,
         "output": "photo-blue.png"},
        {"edit": "inpaint", "image": "photo.png", "mask": "mask.png", "source_prompt": SOURCE, "steps": 4},
        {"edit": "style", "image": "photo.png", "style": "star.png", "steps": 4},
        {"edit": "swap", "image": "broken.png", "source_prompt": SOURCE, "target_prompt": TARGET, "steps": 4},
    ]


def write_manifest(folder: Path, jobs: list[dict], name: str = "jobs.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]

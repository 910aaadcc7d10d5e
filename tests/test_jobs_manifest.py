"""Manifests (ddim_edit/jobs/manifest.py): CSV as JSON lines, PIE-Bench mapping files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.batch_helpers import records, six_jobs, write_manifest
from tests.batch_helpers import photos  # noqa: F401 (pytest fixtures)
from tests.cli_helpers import run, SOURCE, TARGET


def test_csv_manifest_gives_the_jobs_of_json_lines(photos, tmp_path):
    from ddim_edit.jobs.manifest import read_manifest

    jobs = six_jobs()
    json_jobs = read_manifest(write_manifest(photos, jobs), tmp_path / "out")
    columns = sorted({key for job in jobs for key in job})
    lines = [",".join(columns)] + [",".join(f'"{job[key]}"' if key in job else "" for key in columns) for job in jobs]
    (photos / "jobs.csv").write_text("\n".join(lines) + "\n")
    csv_jobs = read_manifest(photos / "jobs.csv", tmp_path / "out")
    assert [(job.edit, job.fields, job.key) for job in csv_jobs] == [(job.edit, job.fields, job.key) for job in json_jobs]
    assert json_jobs[3].fields["mask"] == str(photos / "mask.png")  # relative to the manifest's folder
    assert json_jobs[2].output == (tmp_path / "out" / "photo-blue.png").resolve()


def test_pie_bench_mapping_file(photos, tmp_path):
    from ddim_edit.jobs.manifest import decode_rle_mask, read_manifest

    images = photos / "annotation_images" / "0_random_140"
    images.mkdir(parents=True)
    shutil.copy(photos / "photo.png", images / "000000000000.png")
    mapping = {"000000000000": {"image_path": "0_random_140/000000000000.png",
                                "original_prompt": "a solid [red] circle on a white background",
                                "editing_prompt": "a solid [blue] circle on a white background",
                                "editing_instruction": "make it blue", "editing_type_id": "0",
                                "blended_word": "circle circle", "mask": rle(photos / "mask.png")}}
    (photos / "mapping_file.json").write_text(json.dumps(mapping))
    [job] = read_manifest(photos / "mapping_file.json", tmp_path / "out")
    assert job.edit == "swap" and job.fields["source_prompt"] == SOURCE and job.fields["target_prompt"] == TARGET
    assert job.fields["blend"] == ["circle"] and job.fields["image"] == str(images / "000000000000.png")
    assert job.output == (tmp_path / "out" / "0_random_140" / "000000000000.png").resolve()
    stripe = decode_rle_mask([512 * 200 + 100, 50, 512 * 201 + 100, 50])
    assert stripe[200, 100:150].all() and not stripe[200, 150] and stripe[0].all() and stripe.sum() == 100 + 4 * 511
    assert job.evaluation_mask.shape == (512, 512) and 0.05 < job.evaluation_mask.mean() < 0.5

    result = run("batch", photos / "mapping_file.json", "--out", tmp_path / "out", "-q", "--format", "json")
    assert result.exit_code == 0, result.output
    [record] = records(tmp_path / "out")
    # PSNR outside the annotated region (PIE-Bench's background preservation), at the output's size
    import cv2

    from ddim_edit.metrics import psnr

    edited, photo = np.asarray(Image.open(job.output)), np.asarray(Image.open(photos / "photo.png"))
    outside = cv2.resize(job.evaluation_mask.astype(np.uint8), (451, 300), interpolation=cv2.INTER_NEAREST) == 0
    assert record["status"] == "ok" and record["background_psnr"] == pytest.approx(psnr(edited, photo, outside))
    assert record["background_psnr"] != pytest.approx(record["psnr"])
    assert Image.open(job.output).size == (451, 300)


def rle(mask_path: Path) -> list[int]:
    """A mask as PIE-Bench encodes it: (start, length) runs over the flattened 512×512 image."""
    flat = (np.asarray(Image.open(mask_path).convert("L").resize((512, 512), Image.NEAREST)) > 127).ravel()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat.astype(np.int8), [0]])))
    starts, ends = edges[0::2], edges[1::2]
    return [int(value) for pair in zip(starts, ends - starts) for value in pair]

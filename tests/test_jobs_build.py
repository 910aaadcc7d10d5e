"""Requests built from manifest jobs (ddim_edit/jobs/build.py)."""

from __future__ import annotations

import pytest

from tests.batch_helpers import photos  # noqa: F401 (pytest fixtures)


def test_style_structure_layers_from_a_manifest(photos, tmp_path):
    from ddim_edit.jobs.build import build_request
    from ddim_edit.jobs.manifest import read_manifest

    lines = ['{"edit": "style", "image": "photo.png", "style": "photo.png", "output": "a.png"}',
             '{"edit": "style", "image": "photo.png", "style": "photo.png", "structure_layers": "none", "output": "b.png"}',
             '{"edit": "style", "image": "photo.png", "style": "photo.png", "structure_layers": ["down_blocks.0"], '
             '"output": "c.png"}']
    (photos / "styles.jsonl").write_text("\n".join(lines) + "\n")
    jobs = read_manifest(photos / "styles.jsonl", tmp_path)
    specs = [build_request(job).options.structure_layers for job in jobs]
    assert specs == [None, (), ("down_blocks.0",)]  # default (the encoder), none (StyleID), named


def test_swap_late_and_mask_guidance_from_a_manifest(photos, tmp_path):
    from ddim_edit.jobs.build import build_request
    from ddim_edit.jobs.manifest import ManifestError, read_manifest

    swap = '{"edit": "swap", "image": "photo.png", "source_prompt": "a", "target_prompt": "b", '
    lines = [swap + '"output": "a.png"}',
             swap + '"late_guidance": 2, "guidance_steps": 0.5, "mask_guidance": 2, "output": "b.png"}',
             swap + '"late_guidance": "off", "mask_guidance": "off", "output": "c.png"}']  # off: the default
    (photos / "swaps.jsonl").write_text("\n".join(lines) + "\n")
    options = [build_request(job).options for job in read_manifest(photos / "swaps.jsonl", tmp_path)]
    assert [(o.late_guidance, o.guidance_steps, o.mask_guidance) for o in options] == [
        (None, 0.3, None), (2.0, 0.5, 2.0), (None, 0.3, None)]
    for key in ("late_guidance", "mask_guidance"):
        (photos / "bad.jsonl").write_text(swap + f'"{key}": 0.5, "output": "d.png"}}\n')
        with pytest.raises(ManifestError, match=f"{key} must be a guidance ≥ 1"):
            read_manifest(photos / "bad.jsonl", tmp_path)

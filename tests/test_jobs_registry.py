"""The edits' declarations (ddim_edit/jobs/registry.py): the manifest, the batch and run_request read them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from ddim_edit.jobs import EDIT_SPECS, JobResult, JobSettings
from ddim_edit.jobs.build import build_request
from ddim_edit.jobs.manifest import ManifestError, edit_keys, read_manifest
from ddim_edit.jobs.requests import EditSpec, base_parameters
from ddim_edit.jobs.resolve import resolve_source
from ddim_edit.options import option_specs

from tests.batch_helpers import photos  # noqa: F401 (pytest fixtures)

# the job settings each edit took before they were declared on JobSettings (the keys must not change)
COMMON = {"edit", "output", "model", "model_config", "steps", "spacing", "timesteps", "guidance", "seed", "size",
          "keep_working_size"}
INVERSION = {"method", "inversion_guidance", "negative_prompt", "fixed_point_iterations", "tolerance", "null_text_steps"}
SETTINGS = {"invert": COMMON | INVERSION | {"trajectory_storage"}, "reconstruct": COMMON | INVERSION,
            "swap": COMMON | INVERSION | {"trajectory_storage"}, "inpaint": COMMON | INVERSION, "style": COMMON | {"method"}}


@pytest.mark.parametrize("name", list(EDIT_SPECS))
def test_each_edit_takes_its_settings_inputs_and_declared_options(name):
    spec = EDIT_SPECS[name]
    keys = edit_keys(spec)
    declared = {s.key for cls in spec.options for s in option_specs(cls)} | {
        s.off_key for cls in spec.options for s in option_specs(cls) if s.off_key}
    assert set(keys) == SETTINGS[name] | set(spec.keys) | declared
    assert all(key in keys for one_of in spec.required for key in one_of)


def test_a_manifest_job_becomes_its_edits_request_with_the_settings(photos, tmp_path):
    line = {"image": "photo.png", "source_prompt": "a", "target_prompt": "b", "prompt": "a", "mask": "mask.png",
            "style": "star.png", "steps": 7, "timesteps": [900, 500.0, 100], "seed": 3, "keep_working_size": True}
    lines = [dict(edit=name, output=f"{name}{spec.suffix}",
                  **{key: value for key, value in line.items() if key in edit_keys(spec)})
             for name, spec in EDIT_SPECS.items()]
    (photos / "all.jsonl").write_text("".join(json.dumps(job) + "\n" for job in lines))
    for job in read_manifest(photos / "all.jsonl", tmp_path):
        request = build_request(job, JobSettings(model="toy", negative_prompt="blurry"))
        assert request.edit == job.edit
        assert request.settings == JobSettings(model="toy", negative_prompt="blurry", steps=7, timesteps="900,500,100",
                                               seed=3, keep_working_size=True)


def test_bad_setting_values_are_refused_in_the_manifests_words(photos, tmp_path):
    for key, value, words in (("seed", 2**64, "seed must be an integer ≤ 18446744073709551615"),
                              ("trajectory_storage", "float8", "trajectory_storage must be one of float64, float16"),
                              ("method", "newton", "method must be one of ddim, fixed-point"),
                              ("steps", 0, "steps must be an integer ≥ 1")):
        (photos / "bad.jsonl").write_text(json.dumps({"edit": "invert", "image": "photo.png", key: value}) + "\n")
        with pytest.raises(ManifestError, match=words):
            read_manifest(photos / "bad.jsonl", tmp_path)


# ---------------------------------------------------------------------- an edit added by its declaration alone
@dataclass(frozen=True)
class MirrorRequest:
    image: str
    settings: JobSettings = JobSettings()
    edit: str = field(default="mirror", init=False)


def run_mirror(request: MirrorRequest, models) -> JobResult:
    source = resolve_source(request.image, "", request.settings, models, trajectories=False)
    image = np.ascontiguousarray(source.given[:, ::-1])
    return JobResult("mirror", image, None, {"seconds": source.seconds()},
                     base_parameters("mirror", source.model, request.settings, None, image.shape[1::-1]))


MIRROR = EditSpec("mirror", run_mirror, lambda fields, settings, force: MirrorRequest(fields["image"], settings),
                  keys={"image": str}, required=(("image",),), suffix=".mirror.png", settings=("common",))


def test_a_new_edit_is_its_declaration_plus_a_registry_line(photos, tmp_path, monkeypatch):
    from PIL import Image

    from tests.cli_helpers import run

    monkeypatch.setitem(EDIT_SPECS, "mirror", MIRROR)  # the registry line
    (photos / "m.jsonl").write_text('{"edit": "mirror", "image": "photo.png"}\n'
                                    '{"edit": "mirror", "image": "photo.png", "flip": true}\n')
    refused = run("batch", photos / "m.jsonl", "--out", tmp_path / "out")
    assert refused.exit_code == 1 and "mirror has no option 'flip'" in refused.stderr
    (photos / "m.jsonl").write_text('{"edit": "mirror", "image": "photo.png"}\n')
    result = run("batch", photos / "m.jsonl", "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(tmp_path / "out" / "00000-photo.mirror.png").convert("RGB"))
    source = np.asarray(Image.open(photos / "photo.png").convert("RGB"))
    assert np.array_equal(written, source[:, ::-1])


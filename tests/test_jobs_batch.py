"""The batch runner (ddim_edit/jobs/batch.py): one process and two give the same bytes, reruns, records.
Runs on the bundled toy model with 4 steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ddim_edit.jobs.requests import JobSettings
from tests.batch_helpers import records, six_jobs, write_manifest
from tests.batch_helpers import photos  # noqa: F401 (pytest fixtures)
from tests.cli_helpers import one_line_error, run


ROOT = Path(__file__).resolve().parents[1]


def cli_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def batch_subprocess(manifest: Path, out: Path, processes: int, *extra: str) -> subprocess.CompletedProcess:
    """`ddim-edit batch` in a fresh process, or in ``processes`` processes through accelerate (gloo on the CPU)."""
    args = ["-m", "cli.main", "batch", str(manifest), "--out", str(out), "-q", "--format", "json", *extra]
    if processes == 1:
        command = [sys.executable, *args]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", "29517", *args]
    return subprocess.run(command, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)


def outputs(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())
            if path.suffix in (".png", ".safetensors")}


def same_trajectory(a: Path, b: Path) -> bool:
    from safetensors import safe_open

    with safe_open(a, "pt") as first, safe_open(b, "pt") as second:
        if first.metadata() != second.metadata() or set(first.keys()) != set(second.keys()):
            return False
        return all(first.get_tensor(key).equal(second.get_tensor(key)) for key in first.keys())


def test_one_process_and_two_give_the_same_bytes(photos, tmp_path):
    manifest = write_manifest(photos, six_jobs())
    one, two = tmp_path / "one", tmp_path / "two"
    single = batch_subprocess(manifest, one, 1)
    assert single.returncode == 1, single.stderr  # the exit code counts the failed jobs: one
    double = batch_subprocess(manifest, two, 2)
    assert double.returncode != 0, double.stderr
    assert {record["process"] for record in records(two)} == {0, 1}, "two processes should share the jobs"
    assert {record["process"] for record in records(one)} == {0}
    images = {name: data for name, data in outputs(one).items() if name.endswith(".png")}
    assert len(images) == 4 and images == {name: outputs(two)[name] for name in images}
    # trajectories: the same tensors and metadata (safetensors orders its header's metadata keys from a
    # hash map, so the file bytes may differ between processes)
    assert same_trajectory(one / "photo.traj.safetensors", two / "photo.traj.safetensors")

    summary = json.loads(single.stdout)
    assert summary["failed"] == 1 and summary["total"]["ok"] == 5 and summary["processes"] == 1
    for record in records(one):
        assert record["status"] == ("failed" if record["line"] == 6 else "ok"), record
        assert record["unet_evaluations"] > 0 or record["status"] == "failed"
    bad = records(one)[5]
    assert "cannot read" in bad["error"] and "\n" not in bad["error"] and not Path(bad["output"]).exists()
    for record in records(one)[1:5]:  # images at the source's resolution; the model worked at 64×48
        assert record["size"] == [451, 300] and record["working_size"] == [64, 48]
        with Image.open(record["output"]) as image:
            assert image.size == (451, 300)
    assert records(one)[1]["psnr"] > 25  # the reconstruction is close to the photo


def test_a_rerun_skips_finished_jobs_and_force_redoes_them(photos, tmp_path):
    jobs = [job for job in six_jobs() if job["edit"] in ("reconstruct", "swap")]  # the two swaps: one is broken
    manifest = write_manifest(photos, jobs)
    out = tmp_path / "out"
    first = run("batch", manifest, "--out", out, "-q", "--format", "json")
    assert first.exit_code == 1, first.output
    stamps = {path: path.stat().st_mtime_ns for path in out.glob("*.png")}
    assert len(stamps) == 2

    again = run("batch", manifest, "--out", out, "-q", "--format", "json")
    assert again.exit_code == 1  # the broken job is tried again and fails again
    summary = json.loads(again.stdout)
    assert summary["total"]["skipped"] == 2 and summary["total"]["failed"] == 1
    assert {path: path.stat().st_mtime_ns for path in out.glob("*.png")} == stamps
    assert [record["status"] for record in records(out)] == ["ok", "ok", "failed"]
    assert not (out / ".ddim-edit-records").exists()

    # a finished output that was deleted is made again
    deleted = next(iter(stamps))
    deleted.unlink()
    third = run("batch", manifest, "--out", out, "-q", "--format", "json")
    assert deleted.exists() and json.loads(third.stdout)["total"]["skipped"] == 1

    forced = run("batch", manifest, "--out", out, "-q", "--format", "json", "--force")
    assert json.loads(forced.stdout)["total"]["skipped"] == 0
    assert all(path.stat().st_mtime_ns != stamp for path, stamp in stamps.items() if path != deleted)


def test_an_existing_output_without_a_record_is_not_overwritten(photos, tmp_path):
    manifest = write_manifest(photos, [six_jobs()[1]])
    out = tmp_path / "out"
    out.mkdir()
    (out / "00000-photo.recon.png").write_bytes(b"mine")
    result = run("batch", manifest, "--out", out, "-q")
    assert result.exit_code == 1
    assert (out / "00000-photo.recon.png").read_bytes() == b"mine"
    assert "--force" in records(out)[0]["error"]


@pytest.mark.parametrize("line, fragments", [
    ('{"edit": "warp", "image": "photo.png"}', ("line 1", "invert, reconstruct, swap, inpaint, style")),
    ('{"edit": "swap", "image": "photo.png", "target": "x"}', ("line 1", "'target'", "target_prompt")),
    ('{"edit": "invert", "image": "photo.png", "steps": "many"}', ("line 1", "steps")),
    ('{"edit": "inpaint", "image": "photo.png"}', ("line 1", "mask")),
    ('{"edit": "invert", "image": "photo.png"', ("line 1", "not JSON")),
    ('{"edit": "swap", "image": "photo.png", "target_prompt": "x", "output": "photo.png"}', ("also an input",)),
    ('{"edit": "invert", "image": "photo.png", "output": "x.png"}', (".safetensors",)),
    ('{"edit": "swap", "image": "photo.png", "target_prompt": "x", "blend_change": [60, 20]}', ("blend_change", "LOW < HIGH")),
])
def test_a_bad_manifest_is_refused_before_any_work(photos, tmp_path, line, fragments):
    (photos / "bad.jsonl").write_text(line + "\n")
    one_line_error(run("batch", photos / "bad.jsonl", "--out", photos, "-q"), *fragments)
    assert not (photos / "results.jsonl").exists()


def test_a_job_the_toy_model_does_not_know_records_its_warnings(tmp_path):
    from ddim_edit.jobs.batch import BatchOptions, run_batch
    from ddim_edit.jobs.manifest import read_manifest
    from ddim_edit.model import assets_dir

    manifest = tmp_path / "jobs.jsonl"
    image = assets_dir() / "examples" / "red-circle.png"
    manifest.write_text(json.dumps({"edit": "invert", "image": str(image), "prompt": "a cat on a sofa"}) + "\n"
                        + json.dumps({"edit": "invert", "image": str(image),
                                      "prompt": "a solid red circle on a white background"}) + "\n")
    report = run_batch(read_manifest(manifest, tmp_path / "out"),
                       BatchOptions(out_dir=tmp_path / "out", defaults=JobSettings(steps=2), progress=False))
    unknown, known = sorted(report.records, key=lambda record: record["index"])
    assert unknown["status"] == known["status"] == "ok"
    assert len(unknown["warnings"]) == 1 and "'cat', 'sofa' are unknown" in unknown["warnings"][0]
    assert "warnings" not in known

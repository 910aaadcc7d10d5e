"""The ``batch`` command (cli/batch.py) end to end on the bundled model at --steps 2: outputs stay inside
--out, concurrent and repeated runs lose nothing, PIE-Bench entries are checked before any work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ddim_edit.model import assets_dir
from tests.batch_helpers import records, write_manifest
from tests.cli_helpers import one_line_error, run, SOURCE, TARGET


ROOT = Path(__file__).resolve().parents[1]


def swap_job(output: str | None, target: str = TARGET, **extra) -> dict:
    job = {"edit": "swap", "image": "photo.png", "source_prompt": SOURCE, "target_prompt": target, "steps": 2, **extra}
    return job if output is None else {**job, "output": output}




@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(assets_dir() / "examples" / "red-circle.png", folder / "photo.png")
    shutil.copy(assets_dir() / "examples" / "red-circle.png", folder / "victim.jpg")
    return folder


@pytest.mark.parametrize("output", ["../victim.png", "a/../../victim.png", "ABSOLUTE", "link/victim.png"])
def test_a_job_output_outside_out_is_refused_before_any_work(photos, tmp_path, output):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep me")
    (out / "link").symlink_to(tmp_path)  # inside --out by name, outside once the link is followed
    output = str(victim) if output == "ABSOLUTE" else output
    jobs = write_manifest(photos, [swap_job("fine.png"), swap_job(output)])
    one_line_error(run("batch", jobs, "--out", out, "--force", "-q"), "line 2", "outside the output folder")
    assert victim.read_bytes() == b"keep me" and not (out / "results.jsonl").exists() and not (out / "fine.png").exists()


def test_a_pie_bench_image_path_outside_out_is_refused(photos, tmp_path):
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep me")
    mapping = {"000": {"image_path": "../victim.jpg", "original_prompt": SOURCE, "editing_prompt": TARGET}}
    (photos / "annotation_images").mkdir()
    (photos / "mapping_file.json").write_text(json.dumps(mapping))
    out = tmp_path / "out"
    one_line_error(run("batch", photos / "mapping_file.json", "--out", out, "--force", "-q"),
                   "entry '000'", "outside the output folder")
    assert victim.read_bytes() == b"keep me" and not out.exists()


def batch_process(jobs: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "cli.main", "batch", str(jobs), "--out", str(out), "-q", "--format",
                             "json"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_batches_on_one_out_keep_every_record_and_a_rerun_does_nothing(photos, tmp_path):
    first = write_manifest(photos, [swap_job(f"a{i}.png", TARGET.replace("blue", colour)) for i, colour in
                              enumerate(["blue", "green", "black"])], "first.jsonl")
    second = write_manifest(photos, [swap_job(f"b{i}.png", TARGET.replace("blue", colour)) for i, colour in
                               enumerate(["blue", "green"])], "second.jsonl")
    out = tmp_path / "out"
    runs = [batch_process(first, out), batch_process(first, out), batch_process(second, out)]
    results = [process.communicate(timeout=600) for process in runs]
    for process, (stdout, stderr) in zip(runs, results):
        assert process.returncode == 0 and "Traceback" not in stderr, stderr
    # the two runs of one manifest: one made the outputs, the other waited and found them made
    assert sorted(json.loads(stdout)["total"]["skipped"] for stdout, _ in results[:2]) == [0, 3]
    saved = records(out)
    assert sorted(record["name"] for record in saved) == ["a0.png", "a1.png", "a2.png", "b0.png", "b1.png"]
    assert all(record["status"] == "ok" and len(record["sha256"]) == 64 for record in saved)
    stamps = {path.name: path.stat().st_mtime_ns for path in out.glob("*.png")}
    for jobs, count in ((first, 3), (second, 2)):
        again = run("batch", jobs, "--out", out, "-q", "--format", "json")
        assert again.exit_code == 0 and json.loads(again.stdout)["total"]["skipped"] == count, again.output
    assert len(records(out)) == 5 and {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps


def test_a_rerun_redoes_exactly_the_missing_incomplete_and_out_of_date_outputs(photos, tmp_path):
    jobs = [swap_job(f"{name}.png", TARGET.replace("blue", colour)) for name, colour in
            [("missing", "blue"), ("truncated", "green"), ("changed", "black"), ("kept", "blue")]]
    out = tmp_path / "out"
    assert run("batch", write_manifest(photos, jobs), "--out", out, "-q").exit_code == 0
    kept = (out / "kept.png").stat().st_mtime_ns
    (out / "missing.png").unlink()
    (out / "truncated.png").write_bytes((out / "truncated.png").read_bytes()[:100])
    jobs[2]["target_prompt"] = TARGET.replace("blue", "green")  # the line changed: its output is out of date
    again = run("batch", write_manifest(photos, jobs), "--out", out, "-q", "--format", "json")
    assert again.exit_code == 0, again.output
    assert [record.get("skipped", False) for record in records(out)] == [False, False, False, True]
    assert (out / "kept.png").stat().st_mtime_ns == kept and len((out / "truncated.png").read_bytes()) > 100
    assert len(records(out)) == 4  # the changed line's old record is replaced, not kept beside it

    # another manifest naming an output this one made does not take it over (nor its record) without --force
    other = write_manifest(photos, [swap_job("kept.png", TARGET.replace("blue", "black"))], "other.jsonl")
    taken = run("batch", other, "--out", out, "-q")
    assert taken.exit_code == 1 and (out / "kept.png").stat().st_mtime_ns == kept
    failed = [record for record in records(out) if record["status"] == "failed"]
    assert len(failed) == 1 and "jobs.jsonl" in failed[0]["error"] and "--force" in failed[0]["error"]
    assert sum(record["status"] == "ok" for record in records(out)) == 4


@pytest.mark.parametrize("mask, fragment", [
    (["abc", 5], "mask item 0 is 'abc'"), ([-100, 50], "mask item 0 is -100"), ([100, 50, 7], "pairs"),
    ([512 * 512, 5], "past the 512×512 image"), ([1.5, 2], "whole numbers"), ("abc", "pairs"),
    ({"start": 5}, "pairs"),
])
def test_pie_bench_masks_are_checked_before_any_work(photos, tmp_path, mask, fragment):
    mapping = {"001": {"image_path": "photo.png", "original_prompt": SOURCE, "editing_prompt": TARGET, "mask": mask}}
    (photos / "mapping_file.json").write_text(json.dumps(mapping))
    one_line_error(run("batch", photos / "mapping_file.json", "--out", tmp_path / "out", "-q"), "entry '001'", fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key, value", [("image_path", 5), ("original_prompt", ["a"]), ("blended_word", {"a": 1})])
def test_pie_bench_values_must_be_text(photos, tmp_path, key, value):
    entry = {"image_path": "photo.png", "original_prompt": SOURCE, "editing_prompt": TARGET, key: value}
    (photos / "mapping_file.json").write_text(json.dumps({"002": entry}))
    one_line_error(run("batch", photos / "mapping_file.json", "--out", tmp_path / "out", "-q"), "entry '002'", key,
                   "must be text")


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_batch_out_that_cannot_be_made_is_one_line(photos, tmp_path, where):
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "file.txt" / "out" if where == "under-a-file" else Path("/sys/ddim-edit-test-out/out")
    one_line_error(run("batch", write_manifest(photos, [swap_job("a.png")]), "--out", out, "-q"), "--out", str(out))

"""Fuzz every command with hostile files and option values (issue 10).

A seeded, bounded run: 60 command lines drawn from random bytes, truncated PNG and safetensors
files, folders and missing paths as inputs, and option values that are NaN, ±inf, huge, negative,
empty or not numbers at all, plus empty, exotic and over-long prompts. Every command line runs in a
working folder full of files that must survive: outputs are pointed at existing files now and then,
and --force is never passed. Each run must end without a traceback, with exit code 0 or 1 (2 for
click usage errors), one ``Error:`` line when it fails, and every pre-existing file byte-identical.
Runs at --steps 2 on the bundled model; about a minute on one CPU core.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import app
from ddim_edit.model import assets_dir

CASES = 60
SEED = 20240610
SOURCE = "a solid red circle on a white background"
TARGET = "a solid blue circle on a white background"
LONG = " ".join(["a solid red circle with a tiny dot"] * 12)

FLOATS = ["nan", "inf", "-inf", "1e309", "1e30", "-1", "0", "0.5", "2", "abc", "", "-0", "0.3", "1", "7.5"]
SMALL_INTS = ["-1", "0", "1", "3", "abc", "nan", "1e3", "", "2", "1"]
STEPS = ["0", "-1", "1", "2", "abc", "1001", "nan", "", "2", "3"]
SEEDS = ["-5", "0", "7", str(2**64), str(2**64 - 1), "abc", "1e3"]
SIZES = ["-64", "0", "8", "16", "32", "abc", "nan"]
PROMPTS = ["", "   ", LONG, TARGET, "é∞🙂 ünïcödé", "a", "\t\n", SOURCE]
PAIRS = ["blue=2", "blue=nan", "=3", "blue", "x=inf", "blue=-1e309", "circle=0.5", "0.5", "nan", ""]


def _choice(pool):
    return lambda rng, work: rng.choice(pool)


def _inputs(kinds):
    return lambda rng, work: rng.choice([work.inputs[kind] for kind in kinds] + work.hostile)


COMMON = {
    "--device": _choice(["cpu", "mps", "xpu", "cuda:9", "bogus", ""]),
    "--dtype": _choice(["fp16", "fp32", "bf16", "fp8", ""]),
    "--seed": _choice(SEEDS),
}
SCHEDULE = {
    "--steps": _choice(STEPS),
    "--spacing": _choice(["leading", "trailing", "linspace", "quadratic", "cubic", ""]),
    "--timesteps": _choice(["999,500,1", "5,5", "abc", "", "-1,3", "2000,1", "1", "0,0"]),
}
INVERSION = {
    "--guidance": _choice(FLOATS),
    "--inversion-guidance": _choice(FLOATS),
    "--method": _choice(["ddim", "fixed-point", "negative-prompt", "null-text", "exact", "bogus"]),
    "--negative-prompt": _choice(PROMPTS),
    "--fixed-point-iterations": _choice(SMALL_INTS),
    "--tolerance": _choice(FLOATS),
    "--null-text-steps": _choice(SMALL_INTS),
}
OPTIONS = {
    "invert": {"-p": _choice(PROMPTS), "--size": _choice(SIZES), **COMMON, **SCHEDULE, **INVERSION},
    "reconstruct": {"--guidance": _choice(FLOATS), "--eta": _choice(FLOATS), "--source": _inputs(["image"]), **COMMON},
    "swap": {"-s": _choice(PROMPTS), "-t": _choice(PROMPTS), "--mode": _choice(["replace", "refine", "bogus"]),
             "--blend": _choice(["circle", "blue", "", "nothing"]), "--blend-threshold": _choice(FLOATS),
             "--reweight": _choice(PAIRS), "--cross-steps": _choice(PAIRS), "--self-steps": _choice(FLOATS),
             "--size": _choice(SIZES), **COMMON, **SCHEDULE, **INVERSION},
    "inpaint": {"--prompt": _choice(PROMPTS), "--source-prompt": _choice(PROMPTS), "--dilate": _choice(SMALL_INTS),
                "--feather": _choice(SMALL_INTS), "--mask-threshold": _choice(FLOATS), "--resample": _choice(SMALL_INTS),
                "--jump-length": _choice(SMALL_INTS), "--start-step": _choice(FLOATS), "--size": _choice(SIZES),
                "--mask": _inputs(["mask", "image"]), "--trajectory": _inputs(["trajectory"]),
                **COMMON, **SCHEDULE, **INVERSION},
    "style": {"--gamma": _choice(FLOATS), "--temperature": _choice(FLOATS), "--guidance": _choice(FLOATS),
              "--layers": _choice(["", "all", "bogus", "up_blocks.9", "styleid"]), "--prompt": _choice(PROMPTS),
              "--method": _choice(["ddim", "exact", "bogus"]), "--injection-window": _choice(FLOATS),
              **COMMON, **SCHEDULE},
    "bench": {"--seed": _choice(SEEDS), "--n": _choice(["0", "-1", "1", "abc", ""]), "--steps": _choice(STEPS),
              "--guidance": _choice(FLOATS), "--spacing": _choice(["trailing", "bogus"]),
              "--set": _choice(["foo=1", 'method="ddim"', 'variants=["bogus"]', "kinds=5", "=", "noequals",
                                'swap={"blend": false}', "inversion=3", 'prompt="caption"']),
              "--device": COMMON["--device"]},
    "demo": {"--target": _choice(PROMPTS), "--steps": _choice(STEPS)},
}


class Work:
    """The working folder: good inputs, hostile files, and files that must not change."""

    def __init__(self, root: Path, rng: random.Random):
        self.root = root
        shutil.copy(assets_dir() / "examples" / "red-circle.png", root / "photo.png")
        shutil.copy(assets_dir() / "examples" / "red-circle-mask.png", root / "mask.png")
        traj = root / "photo.traj.safetensors"
        result = CliRunner().invoke(app, ["invert", str(root / "photo.png"), "-p", SOURCE, "--steps", "2", "-o", str(traj),
                                          "-q"])
        assert result.exit_code == 0, result.output
        png, tensors = (root / "photo.png").read_bytes(), traj.read_bytes()
        hostile = {"random.png": rng.randbytes(300), "truncated.png": png[: len(png) // 3], "empty.png": b"",
                   "header-only.png": png[:16], "text.png": b"not an image\n",
                   "random.traj.safetensors": rng.randbytes(500),
                   "truncated.traj.safetensors": tensors[: len(tensors) // 2],
                   "header.traj.safetensors": tensors[:8] + b"{" * 40,
                   "empty.traj.safetensors": b""}
        for name, data in hostile.items():
            (root / name).write_bytes(data)
        (root / "folder.png").mkdir()
        (root / "existing.png").write_bytes(png)
        (root / "existing.traj.safetensors").write_bytes(tensors)
        (root / "grids").mkdir()
        (root / "grids" / "recon-0000-ddim.png").write_bytes(png)
        self.inputs = {"image": str(root / "photo.png"), "mask": str(root / "mask.png"), "trajectory": str(traj)}
        self.hostile = [str(root / name) for name in hostile] + [str(root / "folder.png"), str(root / "missing.png")]
        self.existing = [str(root / "existing.png"), str(root / "existing.traj.safetensors"), str(root / "photo.png")]

    def snapshot(self) -> dict[str, bytes]:
        return {str(path.relative_to(self.root)): path.read_bytes()
                for path in sorted(self.root.rglob("*")) if path.is_file() and "out" not in path.parts}


def _output(rng: random.Random, work: Work, index: int, suffix: str) -> list[str]:
    pick = rng.random()
    if pick < 0.25:
        return ["-o", rng.choice(work.existing)]  # must be refused: no --force
    if pick < 0.35:
        return []  # the default name beside the input (which may exist)
    return ["-o", str(work.root / "out" / f"case{index}{suffix}")]


def command_line(rng: random.Random, work: Work, index: int) -> list[str]:
    """One random command line (the command weighted towards the cheap ones)."""
    command = rng.choice(["invert", "reconstruct", "swap", "inpaint", "style", "bench", "demo",
                          "invert", "reconstruct", "swap", "inpaint", "style"])
    good = rng.random() < 0.5  # otherwise the main input is hostile
    pick = _inputs(["image"]) if not good else (lambda r, w: w.inputs["image"])
    if command == "invert":
        args = ["invert", pick(rng, work), "-p", SOURCE, "--steps", "2", *_output(rng, work, index, ".traj.safetensors")]
    elif command == "reconstruct":
        traj = work.inputs["trajectory"] if good else rng.choice(work.hostile)
        args = ["reconstruct", traj, *_output(rng, work, index, ".png")]
    elif command == "swap":
        source = rng.choice([work.inputs["trajectory"], work.inputs["image"]]) if good else rng.choice(work.hostile)
        args = ["swap", source, "-s", SOURCE, "-t", TARGET, *_output(rng, work, index, ".png")]
        if not source.endswith(".safetensors"):
            args += ["--steps", "2"]
    elif command == "inpaint":
        args = ["inpaint", pick(rng, work), "--mask", work.inputs["mask"], "--source-prompt", SOURCE, "--steps", "2",
                *_output(rng, work, index, ".png")]
    elif command == "style":
        args = ["style", "--content", pick(rng, work), "--style",
                rng.choice([work.inputs["image"], work.inputs["trajectory"]]), "--steps", "2",
                *(_output(rng, work, index, ".png") or ["-o", str(work.root / "out" / f"case{index}.png")])]
    elif command == "bench":
        out = rng.choice([str(work.root / "grids"), str(work.root / "existing.png"), str(work.root / "out" / f"g{index}")])
        args = ["bench", rng.choice(["recon", "swap", "inpaint", "style"]), "--n", "1", "--steps", "2", "--method",
                "ddim", "--out", out, "--format", rng.choice(["json", "text"])]
    else:
        args = ["demo", "--steps", "2", *_output(rng, work, index, ".png")]
    options = OPTIONS[command]
    for flag in rng.sample(sorted(options), k=min(len(options), rng.choice([0, 1, 1, 2, 3]))):
        value = options[flag](rng, work)
        args += [flag, value] if flag != "--injection-window" else [flag, value, value]
    if rng.random() < 0.2:
        args.append("--format=json")
    return [*args, "-q"] if command != "bench" else [*args, "--quiet"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return Work(tmp_path_factory.mktemp("fuzz"), random.Random(SEED))


@pytest.mark.parametrize("index", range(CASES))
def test_fuzz(work, monkeypatch, index):
    monkeypatch.chdir(work.root)
    (work.root / "out").mkdir(exist_ok=True)
    rng = random.Random(SEED * 1000 + index)
    args = command_line(rng, work, index)
    before = work.snapshot()
    result = CliRunner().invoke(app, args)
    shown = f"{args!r}\nexit {result.exit_code}\n{result.output}"
    print(f"\nFUZZ {index} exit {result.exit_code} {args[0]}: " + (result.output.strip().splitlines() or [""])[-1][:160])
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{shown}\n{result.exception!r}"
    assert "Traceback" not in result.output, shown
    assert result.exit_code in (0, 1, 2), shown
    if result.exit_code != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, shown
        flags = {opt for param in app.commands[args[0]].params for opt in param.opts} | {"--help"}
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", errors[0]))
        assert named <= flags, f"{shown}\nthe hint names flags {args[0]} lacks: {sorted(named - flags)}"
    after = work.snapshot()
    changed = sorted(name for name, data in before.items() if after.get(name) != data)
    assert not changed, f"{shown}\nchanged or lost without --force: {changed}"
    # Default outputs (no -o) may add files beside the inputs: remove them so later cases see the same folder.
    for name in set(after) - set(before):
        (work.root / name).unlink()


# ---------------------------------------------------------------------- issue 26: the second round's cases
# One test per case the second fuzz round found (writes outside --out, concurrent batches, PIE-Bench
# masks, tracebacks, uploads, minor hints). Batches run on the bundled model at --steps 2.
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from tests.cli_helpers import one_line_error, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def swap_job(output: str | None, target: str = TARGET, **extra) -> dict:
    job = {"edit": "swap", "image": "photo.png", "source_prompt": SOURCE, "target_prompt": target, "steps": 2, **extra}
    return job if output is None else {**job, "output": output}


def manifest(folder: Path, jobs: list[dict], name: str = "jobs.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def records_in(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


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
    jobs = manifest(photos, [swap_job("fine.png"), swap_job(output)])
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
    first = manifest(photos, [swap_job(f"a{i}.png", TARGET.replace("blue", colour)) for i, colour in
                              enumerate(["blue", "green", "black"])], "first.jsonl")
    second = manifest(photos, [swap_job(f"b{i}.png", TARGET.replace("blue", colour)) for i, colour in
                               enumerate(["blue", "green"])], "second.jsonl")
    out = tmp_path / "out"
    runs = [batch_process(first, out), batch_process(first, out), batch_process(second, out)]
    results = [process.communicate(timeout=600) for process in runs]
    for process, (stdout, stderr) in zip(runs, results):
        assert process.returncode == 0 and "Traceback" not in stderr, stderr
    # the two runs of one manifest: one made the outputs, the other waited and found them made
    assert sorted(json.loads(stdout)["total"]["skipped"] for stdout, _ in results[:2]) == [0, 3]
    saved = records_in(out)
    assert sorted(record["name"] for record in saved) == ["a0.png", "a1.png", "a2.png", "b0.png", "b1.png"]
    assert all(record["status"] == "ok" and len(record["sha256"]) == 64 for record in saved)
    stamps = {path.name: path.stat().st_mtime_ns for path in out.glob("*.png")}
    for jobs, count in ((first, 3), (second, 2)):
        again = run("batch", jobs, "--out", out, "-q", "--format", "json")
        assert again.exit_code == 0 and json.loads(again.stdout)["total"]["skipped"] == count, again.output
    assert len(records_in(out)) == 5 and {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps


def test_a_rerun_redoes_exactly_the_missing_incomplete_and_out_of_date_outputs(photos, tmp_path):
    jobs = [swap_job(f"{name}.png", TARGET.replace("blue", colour)) for name, colour in
            [("missing", "blue"), ("truncated", "green"), ("changed", "black"), ("kept", "blue")]]
    out = tmp_path / "out"
    assert run("batch", manifest(photos, jobs), "--out", out, "-q").exit_code == 0
    kept = (out / "kept.png").stat().st_mtime_ns
    (out / "missing.png").unlink()
    (out / "truncated.png").write_bytes((out / "truncated.png").read_bytes()[:100])
    jobs[2]["target_prompt"] = TARGET.replace("blue", "green")  # the line changed: its output is out of date
    again = run("batch", manifest(photos, jobs), "--out", out, "-q", "--format", "json")
    assert again.exit_code == 0, again.output
    assert [record.get("skipped", False) for record in records_in(out)] == [False, False, False, True]
    assert (out / "kept.png").stat().st_mtime_ns == kept and len((out / "truncated.png").read_bytes()) > 100
    assert len(records_in(out)) == 4  # the changed line's old record is replaced, not kept beside it

    # another manifest naming an output this one made does not take it over (nor its record) without --force
    other = manifest(photos, [swap_job("kept.png", TARGET.replace("blue", "black"))], "other.jsonl")
    taken = run("batch", other, "--out", out, "-q")
    assert taken.exit_code == 1 and (out / "kept.png").stat().st_mtime_ns == kept
    failed = [record for record in records_in(out) if record["status"] == "failed"]
    assert len(failed) == 1 and "jobs.jsonl" in failed[0]["error"] and "--force" in failed[0]["error"]
    assert sum(record["status"] == "ok" for record in records_in(out)) == 4


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
    one_line_error(run("batch", manifest(photos, [swap_job("a.png")]), "--out", out, "-q"), "--out", str(out))


def test_serve_bad_host_port_or_workdir_is_one_line(tmp_path):
    one_line_error(run("serve", "--host", "999.1.1.1"), "--host '999.1.1.1'", "127.0.0.1")
    one_line_error(run("serve", "--host", "192.0.2.1", "--port", "0"), "--host 192.0.2.1", "not an address of this")
    (tmp_path / "file.txt").write_text("x")
    one_line_error(run("serve", "--workdir", tmp_path / "file.txt", "--port", "0"), "--workdir", "is a file")
    one_line_error(run("serve", "--port", "70000"), "--port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        one_line_error(run("serve", "--port", taken.getsockname()[1]), "--port", "cannot listen")


@pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")
@pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated")
def test_uploads_have_a_size_limit_and_are_removed_when_the_server_stops(tmp_path):
    pytest.importorskip("gradio")
    import httpx
    import numpy as np

    from ddim_edit.errors import ImageError
    from ddim_edit.web import Editor, EditorSettings
    from ddim_edit.web.server import free_port, start

    editor = Editor(EditorSettings(steps=2))
    running = start(editor, port=free_port(), max_upload_mb=1)
    uploads, workdir = running.uploads, editor.workdir
    try:
        big, small = tmp_path / "big.bin", tmp_path / "small.png"
        big.write_bytes(os.urandom(2 * 2**20))
        shutil.copy(assets_dir() / "examples" / "red-circle.png", small)
        url = running.url + "gradio_api/upload"
        with open(big, "rb") as handle:
            assert httpx.post(url, files={"files": handle}, timeout=60).status_code == 413
        with open(small, "rb") as handle:
            response = httpx.post(url, files={"files": handle}, timeout=60)
        assert response.status_code == 200 and Path(response.json()[0]).is_relative_to(uploads)
        noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)  # ~1.9 MB as PNG
        with pytest.raises(ImageError, match="upload limit of 1 MB"):
            editor.uploads.keep(noise)
        assert not list((uploads / "images").iterdir())
        editor.uploads.keep(noise[:64, :64])
        assert len(list((uploads / "images").iterdir())) == 1
    finally:
        running.close()
    assert not uploads.exists() and not workdir.exists()


@pytest.mark.parametrize("args, fragment", [
    (["swap", "--foo"], "see 'ddim-edit swap --help'"), (["batch", "jobs.jsonl"], "Missing option '--out'"),
    (["nosuch"], "see 'ddim-edit --help'"), (["swap", "a.png", "--mode", "bogus"], "'--mode'"),
])
def test_usage_errors_are_one_line_with_exit_code_2(args, fragment):
    result = run(*args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert fragment in lines[0] and "--help'" in lines[0]


def test_an_output_inside_a_file_is_called_a_file(tmp_path):
    photo = tmp_path / "red-circle.png"
    shutil.copy(assets_dir() / "examples" / "red-circle.png", photo)
    one_line_error(run("invert", photo, "-p", SOURCE, "-o", photo / "r.traj.safetensors"), "is a file, not a folder")


def test_the_empty_mask_hint_follows_invert_mask(tmp_path):
    from PIL import Image

    white = tmp_path / "all-255.png"
    Image.new("L", (64, 64), 255).save(white)
    photo = assets_dir() / "examples" / "red-circle.png"
    line = run("inpaint", photo, "--mask", white, "--source-prompt", SOURCE, "--invert-mask", "-o", tmp_path / "o.png")
    one_line_error(line, "black", "--invert-mask")
    assert "paint the region to regenerate white" not in line.stderr


def test_demo_hint_names_only_flags_demo_has(tmp_path):
    result = run("demo", "--target", "a big solid blue circle on a white background", "--steps", "1", "-q",
                 "-o", tmp_path / "d.png")
    one_line_error(result, "--target", "ddim-edit swap")
    assert "--mode" not in result.stderr

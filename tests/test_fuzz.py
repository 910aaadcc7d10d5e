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
from tests.cli_helpers import SOURCE, TARGET


CASES = 60


SEED = 20240610


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

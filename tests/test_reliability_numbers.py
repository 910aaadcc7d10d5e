"""Issue 10, part B: numbers, numerics, trajectory integrity and hints.

Every refusal is checked the same way (:func:`refused`): exit code 1 (2 where click itself rejects a
value), exactly one ``Error:`` line on stderr, no exception other than the CLI's own exit, and no
output file created. Runs on the bundled model at ``--steps 4`` (or less) and 64×64.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from cli.main import app
from ddim_edit.errors import DdimEditError, NonFiniteError, PromptError, ScheduleError, TrajectoryError
from ddim_edit.model import assets_dir
from ddim_edit.trajectory import FORMAT_VERSION, CHECKSUM_KEY, METADATA_KEY, Trajectory, content_checksum

SOURCE = "a solid red circle on a white background"
TARGET = "a solid blue circle on a white background"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(result, *fragments, codes=(1,)) -> str:
    """The one-line error contract; returns the ``Error:`` line."""
    assert result.exit_code in codes, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    print(result.exit_code, lines[0])  # shown with pytest -s
    return lines[0]


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with the example photo, its mask and its 4-step exact trajectory (made by the CLI)."""
    folder = tmp_path_factory.mktemp("reliability")
    shutil.copy(assets_dir() / "examples" / "red-circle.png", folder / "photo.png")
    shutil.copy(assets_dir() / "examples" / "red-circle-mask.png", folder / "mask.png")
    result = run("invert", folder / "photo.png", "-p", SOURCE, "--steps", 4, "-o", folder / "photo.traj.safetensors", "-q")
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture()
def out(tmp_path):
    """An empty folder for outputs; the test checks it stays empty."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# ---------------------------------------------------------------------- 1. non-finite numbers at the door
NON_FINITE = [
    ("invert", "--guidance", "inf"), ("invert", "--guidance", "nan"), ("invert", "--inversion-guidance", "nan"),
    ("invert", "--tolerance", "nan"), ("invert", "--guidance", "-inf"),
    ("reconstruct", "--eta", "nan"), ("reconstruct", "--guidance", "inf"),
    ("swap", "--blend-threshold", "nan"), ("swap", "--self-steps", "inf"), ("swap", "--reweight", "blue=inf"),
    ("swap", "--reweight", "blue=nan"), ("swap", "--cross-steps", "nan"), ("swap", "--cross-steps", "blue=inf"),
    ("swap", "--guidance", "nan"),
    ("inpaint", "--mask-threshold", "nan"), ("inpaint", "--start-step", "inf"), ("inpaint", "--guidance", "nan"),
    ("style", "--gamma", "nan"), ("style", "--temperature", "inf"), ("style", "--guidance", "nan"),
    ("bench", "--guidance", "inf"),
]


def command_line(command: str, work: Path, out: Path) -> list:
    """A valid command line for ``command`` writing into ``out`` (options are appended to it)."""
    traj = work / "photo.traj.safetensors"
    return {
        "invert": ["invert", work / "photo.png", "-p", SOURCE, "--steps", 4, "-o", out / "o.traj.safetensors", "-q"],
        "reconstruct": ["reconstruct", traj, "-o", out / "o.png", "-q"],
        "swap": ["swap", traj, "-t", TARGET, "-o", out / "o.png", "-q"],
        "inpaint": ["inpaint", work / "photo.png", "--mask", work / "mask.png", "--source-prompt", SOURCE, "--steps", 4,
                    "-o", out / "o.png", "-q"],
        "style": ["style", "--content", work / "photo.png", "--style", work / "photo.png", "--steps", 4,
                  "-o", out / "o.png", "-q"],
        "bench": ["bench", "recon", "--n", 1, "--steps", 2, "--method", "ddim", "--out", out / "grids", "-q"],
        "demo": ["demo", "--steps", 4, "-o", out / "o.png", "-q"],
    }[command]


@pytest.mark.parametrize("command,flag,value", NON_FINITE)
def test_non_finite_numbers_are_refused(work, out, command, flag, value):
    line = refused(run(*command_line(command, work, out), flag, value), flag.split("=")[0])
    assert "finite" in line
    assert not list(out.iterdir())


def test_injection_window_must_be_finite(work, out):
    refused(run(*command_line("style", work, out), "--injection-window", "0", "nan"), "--injection-window", "finite")
    assert not list(out.iterdir())


def test_every_float_option_of_every_command_is_checked_for_finiteness():
    from cli.common import FiniteFloat

    floats = []
    for name, command in app.commands.items():
        for param in command.params:
            if isinstance(param.type, click.types.FloatParamType):
                floats.append(f"{name} {param.opts[0]}")
            if isinstance(param.type, FiniteFloat):
                floats.append("ok")
    assert floats and set(floats) == {"ok"}, [f for f in floats if f != "ok"]


# ---------------------------------------------------------------------- 2. non-finite latents and images
def _rewrite(path: Path, dest: Path, change_meta=None, change_tensors=None, checksum: str | None = "recompute",
             version: int | None = None) -> Path:
    """Copy trajectory ``path`` to ``dest`` with edited metadata/tensors, as a hand edit would.

    checksum: ``recompute`` (a consistent file), ``keep`` (the original: a tampered file), or None (no checksum).
    """
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    meta = json.loads(header[METADATA_KEY])
    tensors = load_tensors(raw)
    if change_meta:
        change_meta(meta)
    if change_tensors:
        change_tensors(tensors)
    if version is not None:
        meta["format_version"] = version
    extra = {}
    if checksum == "recompute":
        extra[CHECKSUM_KEY] = content_checksum(meta, tensors)
    elif checksum == "keep":
        extra[CHECKSUM_KEY] = header[CHECKSUM_KEY]
    dest.write_bytes(save_tensors({k: v.contiguous() for k, v in tensors.items()},
                                  metadata={METADATA_KEY: json.dumps(meta), **extra}))
    return dest


def _poison(tensors):
    tensors["latents"][2, 0, 1, 1] = float("nan")


@pytest.mark.parametrize("version,checksum", [(1, None), (2, "recompute")])
def test_nan_in_trajectory_latents_is_refused(work, out, version, checksum):
    bad = _rewrite(work / "photo.traj.safetensors", out / "nan.traj.safetensors", change_tensors=_poison,
                   checksum=checksum, version=version)
    before = files(out)
    refused(run("reconstruct", bad, "-o", out / "r.png"), "NaN")
    refused(run("swap", bad, "-t", TARGET, "-o", out / "s.png"), "NaN")
    assert files(out) == before


def _overflowing_denoise(monkeypatch):
    """Every UNet output becomes +inf, as an fp16 overflow does."""
    from ddim_edit.model import EditModel

    original = EditModel.denoise

    def denoise(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        return torch.full_like(output, float("inf"))

    monkeypatch.setattr(EditModel, "denoise", denoise)


def test_overflow_while_sampling_stops_before_saving(work, out, monkeypatch):
    _overflowing_denoise(monkeypatch)
    refused(run("reconstruct", work / "photo.traj.safetensors", "-o", out / "r.png"), "NaN or infinite", "float32")
    refused(run("invert", work / "photo.png", "-p", SOURCE, "--steps", 2, "-o", out / "t.traj.safetensors"),
            "NaN or infinite")
    assert not list(out.iterdir())


def test_decode_refuses_non_finite_latents(tiny_model):
    from ddim_edit.workflow import decode

    latents = torch.zeros(1, 4, 8, 8)
    assert decode(tiny_model, latents).shape == (32, 32, 3)
    latents[0, 1, 2, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        decode(tiny_model, latents)


# ---------------------------------------------------------------------- 3. strict JSON
def _strict_loads(text: str):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict(work, out):
    first = run("reconstruct", work / "photo.traj.safetensors", "-o", out / "r.png", "-q")
    assert first.exit_code == 0, first.output
    # The reconstruction against itself: PSNR is +inf.
    again = run("reconstruct", work / "photo.traj.safetensors", "-o", out / "r2.png", "--source", out / "r.png",
                "--format", "json", "-q")
    assert again.exit_code == 0, again.output
    info = _strict_loads(again.stdout)
    assert info["psnr"] is None and "Infinity" not in again.stdout


def test_json_safe_maps_every_non_finite_number_to_null():
    from ddim_edit.json_output import strict_json

    payload = {"a": float("nan"), "b": [float("inf"), 1.5, {"c": -math.inf}], "d": np.float32("nan"),
               "e": np.float64(2.0), "f": torch.tensor(float("inf")), "g": (1, float("nan")), "h": True}
    assert _strict_loads(strict_json(payload)) == {"a": None, "b": [None, 1.5, {"c": None}], "d": None, "e": 2.0,
                                                   "f": None, "g": [1, None], "h": True}


def test_bench_json_is_strict(out):
    # One scene, 2 steps; the summary holds NaN-able means (a suite metric of no scene) and options.
    result = run("bench", "recon", "--n", 1, "--steps", 2, "--method", "ddim", "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    summary = _strict_loads(result.stdout)
    assert summary["variants"]["ddim"]["psnr"] > 10


# ---------------------------------------------------------------------- 4. image size
@pytest.mark.parametrize("size,codes", [("-64", (1,)), ("0", (1,)), ("8", (1,)), ("15", (1,))])
@pytest.mark.parametrize("command", ["invert", "swap", "inpaint"])
def test_unusable_sizes_are_refused(work, out, command, size, codes):
    args = command_line(command, work, out)
    if command == "swap":  # --size applies to an image input
        args = ["swap", work / "photo.png", "-s", SOURCE, "-t", TARGET, "--steps", 4, "-o", out / "o.png", "-q"]
    refused(run(*args, "--size", size), "--size", codes=codes)
    assert not list(out.iterdir())


def test_smallest_usable_size_works(work, out):
    result = run("invert", work / "photo.png", "-p", SOURCE, "--steps", 2, "--size", 16, "--method", "ddim",
                 "-o", out / "t.traj.safetensors", "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    assert _strict_loads(result.stdout)["size"] == [16, 16]


# ---------------------------------------------------------------------- 5. counts, seeds, devices
@pytest.mark.parametrize("command,args,fragment", [
    ("invert", ["--method", "fixed-point", "--fixed-point-iterations", "0"], "--fixed-point-iterations"),
    ("invert", ["--method", "null-text", "--null-text-steps", "0"], "--null-text-steps"),
    ("invert", ["--steps", "0"], "--steps"),
    ("invert", ["--steps", "-3"], "--steps"),
    ("invert", ["--seed", str(2**64)], "--seed"),
    ("invert", ["--seed", "-1"], "--seed"),
    ("reconstruct", ["--seed", str(10**30)], "--seed"),
    ("bench", ["--seed", "-5"], "--seed"),
    ("bench", ["--n", "0"], "--n"),
    ("bench", ["--steps", "0"], "--steps"),
    ("demo", ["--steps", "-1"], "--steps"),
])
def test_bad_counts_and_seeds_are_refused(work, out, command, args, fragment):
    refused(run(*command_line(command, work, out), *args), fragment)
    assert not list(out.iterdir())


def _absent_devices() -> list[str]:
    from ddim_edit.model import available_devices

    present = available_devices()
    return [device for device in ("mps", "xpu", "cuda", "cuda:7", "cpu:3", "meta", "npu") if device not in present]


@pytest.mark.parametrize("device", _absent_devices())
@pytest.mark.parametrize("command", ["invert", "bench"])
def test_absent_devices_are_refused_naming_those_present(work, out, command, device):
    refused(run(*command_line(command, work, out), "--device", device), "--device", repr(device), "cpu")
    assert not list(out.iterdir())


def test_inversion_options_are_checked_in_the_library(tiny_model):
    from ddim_edit.inversion import InversionOptions, invert
    from ddim_edit.schedule import Schedule

    schedule = Schedule.from_scheduler_config(tiny_model.scheduler_config, num_steps=3)
    z0 = torch.zeros(1, 4, 8, 8)
    for options, field in [(InversionOptions(method="fixed-point", fixed_point_iterations=0), "fixed_point_iterations"),
                           (InversionOptions(method="null-text", null_text_steps=0), "null_text_steps"),
                           (InversionOptions(guidance_scale=float("nan")), "guidance_scale"),
                           (InversionOptions(method="fixed-point", fixed_point_tolerance=float("inf")), "fixed_point_tolerance")]:
        with pytest.raises(DdimEditError) as caught:
            invert(tiny_model, schedule, z0, "a cat", options, progress=False)
        assert caught.value.field == field and field in str(caught.value)


# ---------------------------------------------------------------------- 6. trajectory schema and checksum
def _drop(key, group=None):
    def change(meta):
        del (meta[group] if group else meta)[key]
    return change


def _set(key, value, group=None):
    def change(meta):
        (meta[group] if group else meta)[key] = value
    return change


@pytest.mark.parametrize("change,fragment", [
    (_drop("negative_prompt"), "'negative_prompt' is missing"),
    (_drop("timesteps", "schedule"), "'schedule.timesteps' is missing"),
    (_set("schedule", [999, 749, 499, 249]), "'schedule' must be"),
    (_set("guidance_scale", "7.5"), "'guidance_scale' must be a finite number"),
    (_set("guidance_scale", None), "'guidance_scale' must be a finite number"),
    (_set("method", "magic"), "'method' must be one of"),
    (_set("prompt", 42), "'prompt' must be a string"),
    (_set("prediction_type", "x0", "schedule"), "'schedule.prediction_type'"),
    (_set("latent_shape", [4, 16]), "'latent_shape'"),
    (_set("source", "photo.png"), "'source' must be"),
    (_set("unet_evaluations", -1), "'unet_evaluations'"),
    (_set("model", ""), "'model'"),
])
def test_malformed_metadata_names_the_field(work, out, change, fragment):
    bad = _rewrite(work / "photo.traj.safetensors", out / "bad.traj.safetensors", change_meta=change, checksum="keep")
    before = files(out)
    refused(run("reconstruct", bad, "-o", out / "r.png"), fragment, "invert the image again")
    refused(run("swap", bad, "-t", TARGET, "-o", out / "s.png"), fragment)
    assert files(out) == before
    with pytest.raises(TrajectoryError, match=re.escape(fragment)):
        Trajectory.load(bad)


def _shrink(tensors):
    for name in ("latents", "corrections"):
        tensors[name] = tensors[name][..., :8, :8].clone()


def _nudge(tensors):
    tensors["latents"][1, 0, 0, 0] += 0.25


@pytest.mark.parametrize("change_meta,change_tensors,checksum,fragment", [
    (_set("method", "ddim"), None, "keep", "was modified"),
    (_set("prompt", "a solid blue circle on a white background"), None, "keep", "was modified"),
    (_set("guidance_scale", 3.0), None, "keep", "was modified"),
    (None, _nudge, "keep", "was modified"),
    (None, _shrink, "keep", "'latent_shape' is [4, 16, 16]"),
    (_set("latent_shape", [4, 8, 8]), _shrink, "keep", "was modified"),
    (None, None, None, "no checksum"),
])
def test_tampered_trajectories_are_refused(work, out, change_meta, change_tensors, checksum, fragment):
    bad = _rewrite(work / "photo.traj.safetensors", out / "bad.traj.safetensors", change_meta=change_meta,
                   change_tensors=change_tensors, checksum=checksum)
    before = files(out)
    refused(run("reconstruct", bad, "-o", out / "r.png"), fragment)
    assert files(out) == before


def test_untouched_and_version_1_trajectories_still_load(work, out):
    original = Trajectory.load(work / "photo.traj.safetensors")
    assert original.metadata["format_version"] == FORMAT_VERSION
    old = _rewrite(work / "photo.traj.safetensors", out / "v1.traj.safetensors", checksum=None, version=1)
    loaded = Trajectory.load(old)
    assert torch.equal(loaded.latents, original.latents) and loaded.metadata["prompt"] == SOURCE
    consistent = _rewrite(work / "photo.traj.safetensors", out / "same.traj.safetensors")  # recomputed checksum
    assert Trajectory.load(consistent).metadata == original.metadata


# ---------------------------------------------------------------------- 7. timesteps
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace", "quadratic"])
@pytest.mark.parametrize("steps", [1, 10, 30, 50, 100, 500, 999, 1000])
def test_every_spacing_gives_distinct_descending_timesteps(spacing, steps):
    from ddim_edit.schedule import make_timesteps

    timesteps = make_timesteps(steps, 1000, spacing, steps_offset=1)  # SD 1.x offset (used by leading)
    assert len(timesteps) == steps and len(set(timesteps)) == steps
    assert all(a > b for a, b in zip(timesteps, timesteps[1:])) and 0 <= timesteps[-1] and timesteps[0] <= 999


def test_quadratic_keeps_the_papers_timesteps_where_they_are_distinct():
    from ddim_edit.schedule import make_timesteps

    paper = [int(t) for t in (np.linspace(0, math.sqrt(800), 10) ** 2)][::-1]
    assert make_timesteps(10, 1000, "quadratic") == paper
    quad = make_timesteps(50, 1000, "quadratic")
    assert quad[0] == 800 and quad[-1] == 0  # the paper's range; only repeated small values moved up


def test_quadratic_default_steps_on_the_cli(work, out):
    result = run("invert", work / "photo.png", "-p", SOURCE, "--spacing", "quadratic", "--steps", 30, "--method",
                 "ddim", "--size", 32, "-o", out / "q.traj.safetensors", "-q")
    assert result.exit_code == 0, result.output
    assert Trajectory.load(out / "q.traj.safetensors").num_steps == 30


def test_last_step_from_t0_goes_to_the_clean_sample():
    """set_alpha_to_one=False and a last timestep of 0: diffusers' last step is the identity; ours goes to ᾱ = 1."""
    from diffusers import DDIMScheduler

    from ddim_edit.schedule import Schedule, ddim_step
    from ddim_edit.testing import tiny_pipeline

    config = dict(tiny_pipeline().scheduler.config)
    assert config["set_alpha_to_one"] is False
    for spacing in ("linspace", "quadratic"):
        schedule = Schedule.from_scheduler_config(config, num_steps=10, spacing=spacing)
        assert schedule.timesteps[-1] == 0 and schedule.final_alpha_prod == 1.0
    schedule = Schedule.from_scheduler_config(config, num_steps=10, spacing="linspace")
    sample, output = torch.randn(1, 4, 8, 8, dtype=torch.float64), torch.randn(1, 4, 8, 8, dtype=torch.float64)
    theirs = DDIMScheduler.from_config({**config, "timestep_spacing": "linspace"})
    theirs.set_timesteps(10)
    assert theirs.timesteps[-1] == 0
    identity = theirs.step(output, 0, sample, eta=0.0).prev_sample
    assert torch.allclose(identity, sample)  # the UNet call diffusers spends changes nothing
    ours = ddim_step(output, sample, *schedule.step_pair(9))
    assert not torch.allclose(ours, sample)
    alpha = float(schedule.alphas_cumprod[0])
    assert torch.allclose(ours, (sample - math.sqrt(1 - alpha) * output) / math.sqrt(alpha))  # x̂_0
    # A last timestep above 0 keeps diffusers' final ᾱ_0 (SD 1.x: leading with steps_offset 1).
    leading = Schedule.from_scheduler_config(config, num_steps=10)
    assert leading.timesteps[-1] == 1 and leading.final_alpha_prod == float(leading.alphas_cumprod[0])


# ---------------------------------------------------------------------- 8. null-text learning rate
@pytest.mark.parametrize("steps", [50, 120])
def test_null_text_schedule_scales_with_the_step_count(tiny_model, monkeypatch, steps):
    from ddim_edit import inversion
    from ddim_edit.schedule import Schedule

    rates = []
    real_adam = torch.optim.Adam

    def recording_adam(params, lr, **kwargs):
        rates.append(lr)
        return real_adam(params, lr=lr, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", recording_adam)
    schedule = Schedule.from_scheduler_config(tiny_model.scheduler_config, num_steps=steps)
    latents = torch.randn(steps + 1, 1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cond, null = tiny_model.encode(["a cat"]), tiny_model.encode_negative([""])
    with torch.no_grad():
        embeddings = inversion.optimise_null_text(tiny_model, schedule, latents, cond, null, 7.5, inner_steps=1,
                                                  lr=1e-2, progress=False)
    assert embeddings.shape[0] == steps and len(rates) == steps
    assert all(rate > 0 for rate in rates) and min(rates) >= 0.5e-2 - 1e-12
    if steps == 50:  # the paper's schedule
        assert rates == pytest.approx([1e-2 * (1 - i / 100) for i in range(50)])


# ---------------------------------------------------------------------- 9. prompts past the token limit
LONG = SOURCE + " " + " ".join(["with a tiny dot"] * 30)


def test_prompts_over_the_token_limit_are_refused(work, out):
    refused(run("invert", work / "photo.png", "-p", LONG, "--steps", 2, "-o", out / "t.traj.safetensors"),
            "tokens long", "at most 77")
    refused(run("swap", work / "photo.traj.safetensors", "-t", LONG, "-o", out / "s.png"), "tokens long", "77")
    assert not list(out.iterdir())


def test_prompt_length_is_checked_in_the_library(tiny_model):
    with pytest.raises(PromptError, match="tokens long"):
        tiny_model.encode(["a red cat " * 40])
    with pytest.raises(PromptError, match="tokens long"):
        tiny_model.prompt_tokens("a red cat " * 40)
    assert len(tiny_model.encode(["a red cat"])) == 1


# ---------------------------------------------------------------------- 10. schedule flags with trajectories
@pytest.mark.parametrize("flag,value", [("--steps", "8"), ("--spacing", "trailing"), ("--timesteps", "900,500,100")])
@pytest.mark.parametrize("command", ["swap", "inpaint", "style"])
def test_schedule_flags_with_a_trajectory_are_refused(work, out, command, flag, value):
    traj = work / "photo.traj.safetensors"
    args = {"swap": ["swap", traj, "-t", TARGET],
            "inpaint": ["inpaint", work / "photo.png", "--mask", work / "mask.png", "--trajectory", traj],
            "style": ["style", "--content", traj, "--style", work / "photo.png"]}[command]
    refused(run(*args, "-o", out / "o.png", flag, value), "has 4 steps", flag, "applies only to images")
    assert not list(out.iterdir())


def test_schedule_flags_that_agree_with_the_trajectory_are_accepted(work, out):
    traj = work / "photo.traj.safetensors"
    timesteps = ",".join(str(t) for t in Trajectory.load(traj).timesteps)
    result = run("swap", traj, "-t", TARGET, "-o", out / "o.png", "--steps", 4, "--spacing", "leading",
                 "--timesteps", timesteps, "-q")
    assert result.exit_code == 0, result.output
    assert (out / "o.png").exists()


# ---------------------------------------------------------------------- 11. bench --set keys
def test_unknown_bench_options_are_refused(out):
    line = refused(run("bench", "swap", "--n", 1, "--steps", 2, "--set", "blendd=0.3", "--out", out / "g"),
                   "'blendd'", "--set", "inversion, swap")
    assert "blendd" in line and not (out / "g").exists()


def test_suite_option_lists_match_the_suites():
    from ddim_edit.bench import harness

    for name in harness.SUITES:
        source = Path(harness.__file__).with_name(f"{name}.py").read_text()
        read = set(re.findall(r"\b(?:opts|options|ctx\.options)\.get\(\"(\w+)\"", source))
        assert read == set(harness.SUITE_OPTIONS[name]), (name, read)


# ---------------------------------------------------------------------- 12. fields → flags
def test_errors_carry_fields_rendered_per_caller():
    error = ScheduleError("{field} must be a positive integer, got 0; e.g. {field}=50", field="num_steps")
    assert str(error) == "num_steps must be a positive integer, got 0; e.g. num_steps=50"
    assert error.render("--steps") == "--steps must be a positive integer, got 0; e.g. --steps=50"
    assert str(DdimEditError("plain {field} text")) == "plain {field} text"  # no field: untouched


@pytest.mark.parametrize("command,field,flag", [
    ("swap", "prompt", "--source"), ("swap", "target_prompt", "--target"), ("swap", "guidance_scale", "--guidance"),
    ("swap", "num_steps", "--steps"), ("inpaint", "source_prompt", "--source-prompt"), ("invert", "prompt", "--prompt"),
    ("invert", "fixed_point_tolerance", "--tolerance"), ("bench", "options", "--set"), ("bench", "count", "--n"),
    ("demo", "mode", None), ("bench", "jump_length", None), ("demo", "device", None), ("reconstruct", "num_steps", None),
])
def test_fields_map_to_the_flags_of_the_running_command(command, field, flag):
    from cli.common import flag_for

    with click.Context(app.commands[command]) as ctx:
        assert flag_for(field, ctx) == flag


def test_library_errors_reach_the_cli_as_flags(work, out):
    refused(run("swap", work / "photo.traj.safetensors", "-s", "a green cat", "-t", TARGET, "-o", out / "o.png"),
            "--source 'a green cat' differs")
    refused(run("invert", work / "photo.png", "-p", SOURCE, "--timesteps", "900,500,500", "-o", out / "t.traj.safetensors"),
            "--timesteps must be strictly descending")
    assert not list(out.iterdir())
    from ddim_edit.jobs.edits import check_source_prompt
    from ddim_edit.trajectory import Trajectory

    with pytest.raises(TrajectoryError, match="^source_prompt 'a green cat' differs"):  # the library's own words
        check_source_prompt(Trajectory.load(work / "photo.traj.safetensors"), "a green cat")


@pytest.mark.parametrize("args", [["demo", "--steps", "2", "--target", "a blue circle", "-q"],
                                  ["bench", "inpaint", "--n", "1", "--steps", "2", "-q"]])
def test_hints_name_only_flags_the_command_has(out, monkeypatch, args):
    monkeypatch.chdir(out)
    line = refused(run(*args))
    flags = {opt for param in app.commands[args[0]].params for opt in param.opts}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line))
    assert named <= flags, f"{args[0]} has no {sorted(named - flags)}: {line}"


def test_library_messages_of_these_modules_name_no_cli_flags():
    import ddim_edit

    root = Path(ddim_edit.__file__).parent
    for name in ("schedule.py", "trajectory.py", "workflow.py", "inversion.py", "replay.py", "edits/prompt_swap.py",
                 "edits/p2p_control.py", "edits/local_blend.py", "edits/style.py", "edits/inpaint.py"):
        text = (root / name).read_text()
        messages = re.findall(r"(?:Error|Error\w*)\(\s*(f?\"[^\n]*)", text)
        flagged = [m for m in messages if re.search(r"--[a-z]", m)]
        assert not flagged, (name, flagged)


def test_a_bad_number_is_the_only_line_on_stderr(out):
    """click prints its usage above a bad parameter; ours prints the one Error: line alone."""
    result = run("invert", out / "missing.png", "-p", "a red circle", "--guidance", "inf", "-q")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: Invalid value for '--guidance': 'inf' is not a finite number; e.g. --guidance 7.5"]

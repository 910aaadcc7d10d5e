"""Inpainting by mask blending: the library on a tiny pipeline, and the CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ddim_edit.edits.inpaint import (
    InpaintError,
    InpaintOptions,
    chunks,
    inpaint,
    inpaint_latents,
    renoise,
)
from ddim_edit.images import load_image, read_parameters
from ddim_edit.inversion import InversionOptions
from ddim_edit.masks import MaskError, MaskOptions
from ddim_edit.replay import reconstruct, replay_plan
from ddim_edit.sampler import sample
from ddim_edit.workflow import PreparedImage, invert_image, make_schedule

STEPS = 4
PROMPT = "a red circle on a white background"


def source_pixels() -> np.ndarray:
    rng = np.random.default_rng(3)
    pixels = np.full((32, 32, 3), 245, np.uint8)
    pixels[8:24, 10:26] = (220, 40, 40)
    return np.clip(pixels.astype(int) + rng.integers(-10, 10, pixels.shape), 0, 255).astype(np.uint8)


def hole() -> np.ndarray:
    mask = np.zeros((32, 32), bool)
    mask[4:14, 12:22] = True
    return mask


def invert(model, method="exact", prompt=PROMPT, pixels=None):
    pixels = source_pixels() if pixels is None else pixels
    prepared = PreparedImage(pixels, (32, 32), {})
    return invert_image(model, prepared, prompt, make_schedule(model, STEPS), InversionOptions(method=method),
                        progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads can make a tiny UNet call
    ~100x slower (they wait for each other); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model(tiny_pipe):
    """One model for the module (the UNet-evaluation counter is read as differences)."""
    from ddim_edit.model import EditModel

    return EditModel.from_pipeline(tiny_pipe, name="tiny")


@pytest.fixture(scope="module")
def traj(tiny_model):
    return invert(tiny_model)


def test_nothing_masked_gives_the_reconstruction(tiny_model, traj):
    zeros = np.zeros(traj.latents.shape[-2:])
    latents, info = inpaint_latents(tiny_model, traj, zeros, progress=False)
    # Blending with m = 0 lands on the trajectory's z_0 exactly ...
    torch.testing.assert_close(latents[0], traj.z_0.to(latents), rtol=0, atol=0)
    # ... which is what the exact method's replay reconstructs (up to float64 round-off).
    torch.testing.assert_close(latents, reconstruct(tiny_model, traj, progress=False), rtol=0, atol=1e-9)
    assert info["unet_evaluations"] == 2 * STEPS  # guided: [uncond, cond] per step


def test_nothing_masked_with_plain_ddim_gives_the_trajectory_z0(tiny_model):
    ddim = invert(tiny_model, method="ddim")
    latents, _ = inpaint_latents(tiny_model, ddim, np.zeros((8, 8)), InpaintOptions(known="fresh"), progress=False)
    torch.testing.assert_close(latents[0], ddim.z_0.to(latents), rtol=0, atol=0)


def test_exact_and_plain_ddim_trajectories_inpaint_identically(tiny_model, traj):
    ddim = invert(tiny_model, method="ddim")
    mask = np.zeros((8, 8))
    mask[1:4, 2:6] = 1.0
    from_exact, _ = inpaint_latents(tiny_model, traj, mask, progress=False)
    from_ddim, _ = inpaint_latents(tiny_model, ddim, mask, progress=False)
    torch.testing.assert_close(from_exact, from_ddim, rtol=0, atol=0)


def test_fresh_hole_start_changes_only_the_start_of_the_hole(tiny_model, traj):
    mask = np.zeros((8, 8))
    mask[1:4, 2:6] = 1.0
    shared, _ = inpaint_latents(tiny_model, traj, mask, progress=False)
    fresh_hole, info = inpaint_latents(tiny_model, traj, mask, InpaintOptions(hole_start="fresh"), progress=False)
    assert info["hole_start"] == "fresh"
    keep = torch.from_numpy(mask == 0)
    torch.testing.assert_close(fresh_hole[0][:, keep], shared[0][:, keep], rtol=0, atol=0)
    assert (fresh_hole[0][:, ~keep] - shared[0][:, ~keep]).abs().max() > 1e-3
    nothing, _ = inpaint_latents(tiny_model, traj, np.zeros((8, 8)), InpaintOptions(hole_start="fresh"), progress=False)
    torch.testing.assert_close(nothing[0], traj.z_0.to(nothing), rtol=0, atol=0)


def test_everything_masked_is_plain_sampling_from_the_same_x_T(tiny_model, traj):
    latents, _ = inpaint_latents(tiny_model, traj, np.ones((8, 8)), progress=False)
    plan = replay_plan(tiny_model, traj)
    with torch.no_grad():  # the generated branch: x_T, the source prompt, no exact-inversion corrections
        expected = sample(tiny_model, plan.schedule, plan.x_T, plan.conditioning, plan.guidance_scale, progress=False)
    torch.testing.assert_close(latents, expected, rtol=0, atol=1e-12)
    assert not torch.allclose(latents, traj.z_0.to(latents)[None], atol=1e-3)


def test_unmasked_latents_follow_the_shared_trajectory(tiny_model, traj):
    mask = np.zeros((8, 8))
    mask[2:5, 3:6] = 1.0
    latents, _ = inpaint_latents(tiny_model, traj, mask, progress=False)
    keep = torch.from_numpy(mask == 0)
    z_0 = traj.z_0.to(latents)
    torch.testing.assert_close(latents[0][:, keep], z_0[:, keep], rtol=0, atol=0)
    assert (latents[0][:, ~keep] - z_0[:, ~keep]).abs().max() > 1e-3


def test_paste_keeps_unmasked_pixels_bit_for_bit(tiny_model, traj):
    pixels = source_pixels()
    result = inpaint(tiny_model, traj, pixels, hole(), progress=False)
    outside = result.mask.soft == 0
    assert outside.sum() > 500
    np.testing.assert_array_equal(result.image[outside], pixels[outside])
    np.testing.assert_array_equal(result.image[result.mask.binary], result.generated[result.mask.binary])
    unpasted = inpaint(tiny_model, traj, pixels, hole(), InpaintOptions(paste=False), progress=False)
    np.testing.assert_array_equal(unpasted.image, unpasted.generated)
    assert not np.array_equal(unpasted.image[outside], pixels[outside])  # the VAE round trip is not exact
    assert result.info["paste"] and not unpasted.info["paste"]


def test_restore_uses_the_source_prompt_and_prompt_replaces(tiny_model, traj):
    pixels = source_pixels()
    restored = inpaint(tiny_model, traj, pixels, hole(), progress=False)
    replaced = inpaint(tiny_model, traj, pixels, hole(), InpaintOptions(prompt="a blue square on a black background"),
                       progress=False)
    assert restored.info["prompt"] == PROMPT
    assert replaced.info["prompt"] == "a blue square on a black background"
    assert not np.array_equal(restored.image[hole()], replaced.image[hole()])
    np.testing.assert_array_equal(restored.image[restored.mask.soft == 0], replaced.image[replaced.mask.soft == 0])


def test_fresh_noise_blending_is_seeded_and_differs_from_shared(tiny_model, traj):
    pixels = source_pixels()
    first = inpaint(tiny_model, traj, pixels, hole(), InpaintOptions(known="fresh", seed=1), progress=False)
    again = inpaint(tiny_model, traj, pixels, hole(), InpaintOptions(known="fresh", seed=1), progress=False)
    other = inpaint(tiny_model, traj, pixels, hole(), InpaintOptions(known="fresh", seed=2), progress=False)
    shared = inpaint(tiny_model, traj, pixels, hole(), progress=False)
    torch.testing.assert_close(first.latents, again.latents, rtol=0, atol=0)
    assert not torch.allclose(first.latents, other.latents)
    assert not torch.allclose(first.latents, shared.latents)


def test_resampling_and_start_step_count_unet_evaluations(tiny_model, traj):
    mask = hole()
    jumped = inpaint(tiny_model, traj, source_pixels(), mask, InpaintOptions(resample=2, jump_length=3), progress=False)
    # Chunks (0, 3) and (3, 4), each walked 1 + 2 times, 2 guided batch items per step.
    assert jumped.info["sampler_steps"] == 3 * (3 + 1)
    assert jumped.info["unet_evaluations"] == 3 * (3 + 1) * 2
    late = inpaint(tiny_model, traj, source_pixels(), mask, InpaintOptions(start_step=0.5), progress=False)
    assert late.info["start_index"] == 2 and late.info["unet_evaluations"] == 2 * 2
    np.testing.assert_array_equal(late.image[late.mask.soft == 0], source_pixels()[late.mask.soft == 0])
    assert chunks(1, 6, 2, 1) == [(1, 3), (3, 5), (5, 6)]
    assert chunks(1, 6, 2, 0) == [(1, 6)]


def test_renoise_matches_the_forward_process_marginal(tiny_model, traj):
    plan = replay_plan(tiny_model, traj)
    z = torch.zeros(20000, dtype=torch.float64)
    generator = torch.Generator("cpu").manual_seed(0)
    noised = renoise(z, plan.schedule, STEPS, 2, generator)
    # From z_0 = 0 at position N to position 2: variance 1 − ᾱ_2 / ᾱ_N.
    expected = 1.0 - plan.schedule.alpha_prod(2) / plan.schedule.alpha_prod(STEPS)
    assert float(noised.var()) == pytest.approx(expected, rel=0.05)


def test_bad_settings_are_refused(tiny_model, traj):
    pixels = source_pixels()
    for options, message in [(InpaintOptions(start_step=1.0), "^start_step must"),  # library words, not flags
                             (InpaintOptions(resample=-1), "resample"),
                             (InpaintOptions(resample=1, jump_length=STEPS + 1), "^jump_length [0-9]+ exceeds"),
                             (InpaintOptions(known="nearest"), "known-region"),
                             (InpaintOptions(hole_start="zeros"), "hole start")]:
        with pytest.raises(InpaintError, match=message):
            inpaint(tiny_model, traj, pixels, hole(), options, progress=False)
    with pytest.raises(MaskError, match="nothing to inpaint"):
        inpaint(tiny_model, traj, pixels, np.zeros((32, 32)), progress=False)
    with pytest.raises(MaskError, match="plain generation"):
        inpaint(tiny_model, traj, pixels, np.ones((32, 32)), progress=False)
    with pytest.raises(MaskError, match="--resize-mask"):
        inpaint(tiny_model, traj, pixels, np.ones((16, 16)), progress=False)
    assert inpaint(tiny_model, traj, pixels, cv2.resize(hole().astype(np.uint8) * 255, (64, 64)),
                   mask_options=MaskOptions(resize=True), progress=False).image.shape == (32, 32, 3)


# ---------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def files(tmp_path):
    import PIL.Image

    image = tmp_path / "photo.png"
    PIL.Image.fromarray(source_pixels()).save(image)
    mask = tmp_path / "hole.png"
    cv2.imwrite(str(mask), hole().astype(np.uint8) * 255)
    return tmp_path, image, mask


def run_cli(*args):
    from cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cli_inpaints_and_reuses_a_trajectory(files, tiny_model_dir):
    folder, image, mask = files
    out = folder / "out.png"
    common = ["--model", tiny_model_dir, "--steps", 4, "-q", "--format", "json"]
    result = run_cli("inpaint", image, "--mask", mask, "--source-prompt", PROMPT, "-o", out, *common)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["prompt"] == PROMPT and payload["blend"] == "shared" and payload["paste"]
    # Plain DDIM inversion by default (4; the blend never uses exact corrections) + inpainting (2·4).
    assert payload["unet_evaluations"] == 4 + 2 * 4 and payload["method"] == "ddim"
    written = load_image(out)
    far = np.ones((32, 32), bool)
    far[0:19, 7:27] = False  # the hole grown by its 4-px feather
    np.testing.assert_array_equal(written[far], source_pixels()[far])
    assert read_parameters(out)["command"] == "inpaint"

    again = run_cli("inpaint", image, "--mask", mask, "-o", out, *common)
    assert again.exit_code == 1 and "already exists" in again.output

    traj_path = folder / "photo.traj.safetensors"
    assert run_cli("invert", image, "--prompt", PROMPT, "-o", traj_path, *common).exit_code == 0
    reused = run_cli("inpaint", image, "--mask", mask, "--trajectory", traj_path, "--prompt", "a blue square",
                     "--resample", 1, "--jump-length", 2, "--no-paste", "--hole-noise", "fresh", "--grid", "-o", folder / "new.png", *common)
    assert reused.exit_code == 0, reused.output
    payload = json.loads(reused.stdout.strip().splitlines()[-1])
    assert payload["prompt"] == "a blue square" and payload["inpaint_unet_evaluations"] == 2 * 2 * 2 * 2
    assert load_image(folder / "new.png").shape[:2] == (32, 32)  # the result alone …
    assert load_image(folder / "new.grid.png").shape[1] > 3 * 32  # … and input | mask | result beside it


def test_cli_bad_masks_give_one_line_errors(files, tiny_model_dir):
    folder, image, mask = files
    common = ["--model", tiny_model_dir, "--steps", 2, "-q", "--source-prompt", PROMPT]
    (folder / "notes.png").write_text("hello")
    cv2.imwrite(str(folder / "black.png"), np.zeros((32, 32), np.uint8))
    cv2.imwrite(str(folder / "white.png"), np.full((32, 32), 255, np.uint8))
    cv2.imwrite(str(folder / "small.png"), cv2.resize(hole().astype(np.uint8) * 255, (20, 20)))
    cases = [("missing.png", "does not exist"), ("notes.png", "cannot read mask"),
             ("black.png", "nothing to inpaint"), ("white.png", "plain generation"), ("small.png", "--resize-mask")]
    for name, message in cases:
        result = run_cli("inpaint", image, "--mask", folder / name, "-o", folder / f"{name}.out.png", *common)
        assert result.exit_code == 1, (name, result.output)
        lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(lines) == 1 and message in lines[0], (name, result.stderr)
        assert not (folder / f"{name}.out.png").exists()
    ok = run_cli("inpaint", image, "--mask", folder / "small.png", "--resize-mask", "-o", folder / "r.png", *common)
    assert ok.exit_code == 0, ok.output
    no_prompt = run_cli("inpaint", image, "--mask", mask, "-o", folder / "p.png", "--model", tiny_model_dir, "-q")
    assert no_prompt.exit_code == 1 and "--source-prompt" in no_prompt.stderr


def test_bench_suite_runs_every_variant_and_counts_evaluations(tiny_model):
    from ddim_edit.bench.harness import BenchContext
    from ddim_edit.bench.inpaint import run, scene_mask
    from ddim_edit.toy.world import sample_scenes, shape_mask

    scenes = sample_scenes(1000, 2)
    for scene in scenes:  # the three mask kinds: inside the shape, outside it, across its outline
        silhouette = shape_mask(scene, 64)
        rng = np.random.default_rng(0)
        inside, outside, across = (scene_mask(scene, kind, 64, rng) for kind in ("shape", "background", "boundary"))
        assert inside.any() and not (inside & ~silhouette).any()
        assert outside.any() and not (outside & silhouette).any()
        assert (across & silhouette).any() and (across & ~silhouette).any()
    ctx = BenchContext(model=tiny_model, steps=3, n=1, options={"resample": 1, "jump_length": 2})
    results = list(run(ctx, scenes[:1]))
    names = {r.variant for r in results}
    assert {"corrupted", "shared", "shared-freshhole", "bld", "repaint", "shared@shape", "bld@boundary"} <= names
    by_name = {r.variant: r.metrics for r in results}
    assert by_name["shared"]["unet_evals"] == 3 + 2 * 3  # plain DDIM inversion + guided sampling
    assert by_name["bld"]["unet_evals"] == 2 * 3  # no inversion needed
    assert by_name["repaint"]["unet_evals"] == 3 + 2 * (2 * 2 + 2 * 1)  # chunks (0,2), (2,3), each walked twice
    assert by_name["corrupted"]["psnr_mask"] < 30 and by_name["corrupted"]["seam_err"] > 0

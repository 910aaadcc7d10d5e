"""Inpainting by mask blending (ddim_edit/edits/inpaint.py) on a tiny pipeline."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ddim_edit.edits.inpaint import chunks, inpaint, inpaint_latents, InpaintError, InpaintOptions, renoise
from ddim_edit.masks import MaskError, MaskOptions
from ddim_edit.replay import reconstruct, replay_plan
from ddim_edit.sampler import sample
from tests.inpaint_helpers import hole, invert, PROMPT, source_pixels, STEPS
from tests.inpaint_helpers import one_thread, tiny_model  # noqa: F401 (pytest fixtures)


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

"""Prompt swap (ddim_edit/edits/prompt_swap.py): the exact identity edit, UNet evaluations, edits that
change only what the words name, edit-time, late and mask guidance, clear errors."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from ddim_edit.edits.p2p_control import injected_steps
from ddim_edit.edits.prompt_swap import differing_words, edited_image, guidance_per_step, swap, SwapOptions
from ddim_edit.errors import PromptError, TrajectoryError
from ddim_edit.inversion import InversionOptions, invert, METHODS
from ddim_edit.metrics import psnr
from ddim_edit.replay import reconstruct
from ddim_edit.workflow import decode, make_schedule
from tests.swap_helpers import SOURCE, TARGET
from tests.swap_helpers import trajectories  # noqa: F401 (pytest fixtures)


def test_same_prompt_reproduces_the_reconstruction_exactly(trajectories):
    model, trajs = trajectories
    traj = trajs["exact"]
    reconstruction = reconstruct(model, traj, progress=False)
    result = swap(model, traj, SOURCE, SwapOptions(blend_words=("circle",), blend_latents=True, correct_inside_mask=True),
                  progress=False)
    assert (result.target_latents - reconstruction).abs().max() <= 1e-6
    assert torch.equal(result.source_latents[0], traj.z_0.to(result.source_latents))  # the recorded z_0
    # and the exact reconstruction is the inverted image's latent
    assert (reconstruction[0] - traj.z_0.to(reconstruction)).abs().max() <= 1e-6


def test_unet_evaluations_per_edit(trajectories):
    model, trajs = trajectories
    n = trajs["exact"].num_steps
    blended = swap(model, trajs["exact"], TARGET, SwapOptions(blend_words=("red", "blue")), progress=False)
    assert blended.unet_evaluations == 3 * n  # target (uncond + cond) + source cond, every step
    # no blend: the source runs only while injecting (cross 0.5, self 0.3 → steps 0-1 of 4)
    plain = swap(model, trajs["exact"], TARGET, SwapOptions(cross_steps=0.5, self_steps=0.3, blend_words=()),
                 progress=False)
    assert plain.unet_evaluations == 2 * n + 2
    full = swap(model, trajs["exact"], TARGET, SwapOptions(reuse_source=False), progress=False)
    assert full.unet_evaluations == 4 * n
    assert (full.target_latents - plain.target_latents).abs().max() > 0  # different settings, different edits
    same = swap(model, trajs["exact"], TARGET, SwapOptions(cross_steps=0.5, self_steps=0.3, reuse_source=False,
                                                           blend_words=()), progress=False)
    assert (same.target_latents - plain.target_latents).abs().max() <= 1e-4  # reuse changes cost, not result
    assert swap(model, trajs["ddim"], TARGET, progress=False).unet_evaluations == 4 * n


def test_local_blend_keeps_the_source_outside_the_mask(trajectories):
    model, trajs = trajectories
    result = swap(model, trajs["exact"], TARGET, SwapOptions(blend_words=("blue",), blend_threshold=0.8,
                                                             blend_pool_radius=0, blend_latents=True), progress=False)
    mask = result.blend_mask
    assert mask is not None and 0 < mask.sum() < mask.numel()
    outside = ~mask
    difference = (result.target_latents - result.source_latents)[0].abs().amax(0)
    assert difference[outside].max() == 0 and difference[mask].max() > 0


@pytest.mark.parametrize("case", ["replace_tokens", "blend", "reweight", "source", "fraction", "empty"])
def test_bad_input_raises_clear_errors(trajectories, case):
    model, trajs = trajectories
    target, options, source, error, fragment = TARGET, SwapOptions(), None, PromptError, ""
    if case == "replace_tokens":
        target, fragment = "a blue striped circle on a white background", "the target has 8 words and the source 7 .'red' → 'blue striped'.; use mode refine"
    elif case == "blend":
        options, fragment = SwapOptions(blend_words=("dog",)), "blend word 'dog'"
    elif case == "reweight":
        options, fragment = SwapOptions(reweight={"dog": 2.0}), "reweight word 'dog'"
    elif case == "source":
        source, error, fragment = "a green square", TrajectoryError, "differs"
    elif case == "fraction":
        options, fragment = SwapOptions(self_steps=1.5), "^self_steps must be"  # library words, not CLI flags
    elif case == "empty":
        target, fragment = "  ", "target prompt is empty"
    with pytest.raises(error, match=fragment):
        swap(model, trajs["exact"], target, options, source_prompt=source, progress=False)


@pytest.fixture(scope="module")
def tiny(tiny_pipe):
    from ddim_edit.model import EditModel

    model = EditModel.from_pipeline(tiny_pipe, name="tiny")
    schedule = make_schedule(model, 6)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    options = {method: InversionOptions(method=method, fixed_point_iterations=3, null_text_steps=2)
               for method in METHODS}
    return model, {method: invert(model, schedule, z0, SOURCE, opts, progress=False) for method, opts in options.items()}


@pytest.mark.parametrize("method", METHODS)
def test_identity_swap_is_the_reconstruction_for_every_method(tiny, method):
    model, trajs = tiny
    traj = trajs[method]
    result = swap(model, traj, SOURCE, progress=False)  # default options
    reconstruction = reconstruct(model, traj, progress=False)
    assert result.blend_words == ()  # nothing differs: no blend
    assert (result.target_latents - result.source_latents).abs().max() <= 1e-6
    assert (result.source_latents - reconstruction).abs().max() <= 1e-4  # fp32 UNet, other batch size
    recon_pixels, identity_pixels = decode(model, reconstruction), decode(model, result.target_latents)
    assert psnr(identity_pixels, recon_pixels) >= 40


def test_identity_holds_at_another_guidance_without_reinverting(tiny):
    model, trajs = tiny
    traj = trajs["exact"]  # recorded at 7.5
    result = swap(model, traj, SOURCE, guidance_scale=3.0, progress=False)
    # the source branch stays exact (the recorded latents); the target's correction is made at 3.0
    assert torch.equal(result.source_latents[0], traj.z_0.to(result.source_latents))
    assert (result.target_latents - result.source_latents).abs().max() <= 1e-6
    n = traj.num_steps
    assert result.unet_evaluations == 4 * n  # source uncond + cond for the correction, target uncond + cond
    shared = swap(model, traj, SOURCE, SwapOptions(shared_uncond=True), guidance_scale=3.0, progress=False)
    assert shared.unet_evaluations == 3 * n  # the correction takes the target's uncond
    assert (shared.target_latents - shared.source_latents).abs().max() <= 1e-6
    recorded = swap(model, traj, SOURCE, progress=False)  # 7.5 at every step: recorded corrections throughout
    assert recorded.unet_evaluations == 2 * n + injected_steps(SwapOptions.self_steps, n)
    # with a late guidance the steps after the guidance interval run at 2: there the correction is computed
    full, borrowing = injected_steps(SwapOptions.guidance_steps, n), injected_steps(SwapOptions.self_steps, n)
    late = swap(model, traj, SOURCE, SwapOptions(late_guidance=2.0), progress=False)
    assert late.unet_evaluations == 2 * full + min(full, borrowing) + 4 * (n - full)
    assert (late.target_latents - late.source_latents).abs().max() <= 1e-6


def test_edit_at_another_guidance_changes_the_edit_not_the_source(tiny):
    model, trajs = tiny
    at_recorded = swap(model, trajs["exact"], TARGET, progress=False)
    at_three = swap(model, trajs["exact"], TARGET, guidance_scale=3.0, progress=False)
    assert torch.equal(at_recorded.source_latents, at_three.source_latents)
    assert (at_recorded.target_latents - at_three.target_latents).abs().max() > 1e-4


def test_recorded_and_online_corrections_give_the_same_edit(tiny):
    """Corrections recorded at inversion and computed during the swap are the same c_i."""
    model, trajs = tiny
    traj = trajs["exact"]
    schedule = make_schedule(model, traj.num_steps)
    unrecorded = invert(model, schedule, traj.z_0[None], SOURCE, InversionOptions(method="exact", record_corrections=False),
                        progress=False)
    assert unrecorded.corrections is None
    for options in (SwapOptions(blend_words=()), SwapOptions(blend_words=(), late_guidance=2.0)):
        recorded = swap(model, traj, TARGET, options, progress=False)  # the late steps compute theirs
        online = swap(model, unrecorded, TARGET, options, progress=False)
        assert (recorded.target_latents - online.target_latents).abs().max() <= 1e-4
        assert online.unet_evaluations == 4 * traj.num_steps


def test_shared_uncond_correction_is_the_conditional_difference(tiny):
    """With the target's uncond in the source's correction, the uncond halves cancel where the correction acts.

    Without a mask the correction acts everywhere, so each target step is the source's recorded step
    plus the DDIM step's linear parts: z_{i+1} + a (x_i − z_i) + b w (ε_c,tgt(x_i) − ε_c,src(z_i)).
    The same result from a swap that runs with the source's own uncond (4 evaluations per step) would
    need the uncond differences to vanish, which they do not for a real edit.
    """
    model, trajs = tiny
    schedule = make_schedule(model, trajs["exact"].num_steps)
    traj = invert(model, schedule, trajs["exact"].z_0[None], SOURCE,
                  InversionOptions(method="exact", record_corrections=False), progress=False)
    # no attention edit (plain sampling); a guidance interval: 7.5, then 2
    options = SwapOptions(blend_words=(), cross_steps=0.0, self_steps=0.0, late_guidance=2.0)
    own = swap(model, traj, TARGET, options, progress=False)  # no blend: the source's own uncond by default
    shared = swap(model, traj, TARGET, replace(options, shared_uncond=True), progress=False)
    assert shared.unet_evaluations == 3 * traj.num_steps and own.unet_evaluations == 4 * traj.num_steps
    assert (shared.target_latents - own.target_latents).abs().max() > 1e-5  # the uncond difference mattered
    # float64 re-computation of the shared-uncond recursion from the UNet's conditional outputs
    full = injected_steps(SwapOptions.guidance_steps, traj.num_steps)
    assert 0 < full < traj.num_steps  # both guidances are exercised
    guidance = [7.5] * full + [2.0] * (traj.num_steps - full)
    cond = model.encode([SOURCE, TARGET], model.image_size(traj.latents))
    z = traj.latents.to(model.device, torch.float64)[:, None]  # [N + 1, 1, C, h, w]
    x = z[0].clone()
    for i in range(traj.num_steps):
        t = schedule.timesteps[i]
        with torch.no_grad():
            eps = model.denoiser(torch.cat([z[i], x]).float(), t, **cond.unet_kwargs()).sample.double()
        alpha_t, alpha_prev = schedule.step_pair(i)
        a = (alpha_prev / alpha_t) ** 0.5
        b = (1 - alpha_prev) ** 0.5 - (alpha_prev * (1 - alpha_t) / alpha_t) ** 0.5
        x = z[i + 1] + a * (x - z[i]) + b * guidance[i] * (eps[1:] - eps[:1])
    assert (x.float() - shared.target_latents.to(x.device)).abs().max() <= 1e-4
    assert shared.late_guidance == 2.0
    constant = swap(model, traj, TARGET, replace(options, shared_uncond=True, late_guidance=None), progress=False)
    assert constant.late_guidance is None
    assert (constant.target_latents - shared.target_latents).abs().max() > 1e-5  # the late guidance mattered
    # with a blend (the default words) the correction shares the uncond by default: 3 per step, not 4
    blended = swap(model, traj, TARGET, progress=False)
    explicit = swap(model, traj, TARGET, SwapOptions(shared_uncond=True), progress=False)
    apart = swap(model, traj, TARGET, SwapOptions(shared_uncond=False), progress=False)
    assert blended.unet_evaluations == 3 * traj.num_steps and apart.unet_evaluations == 4 * traj.num_steps
    assert torch.equal(blended.target_latents, explicit.target_latents)


def test_guidance_interval_then_late_guidance():
    options = SwapOptions(late_guidance=2.0)
    assert guidance_per_step(7.5, SwapOptions(), 3) == [7.5] * 3  # off by default
    assert guidance_per_step(7.5, options, 10) == [7.5] * 3 + [2.0] * 7  # int(0.3 · 10) steps at full guidance
    assert guidance_per_step(7.5, replace(options, late_guidance=None), 4) == [7.5] * 4
    assert guidance_per_step(1.5, options, 4) == [1.5] * 4  # never above the edit's guidance
    assert guidance_per_step(7.5, replace(options, guidance_steps=1.0), 5) == [7.5] * 5
    assert guidance_per_step(5.0, replace(options, guidance_steps=0.0, late_guidance=3.0), 3) == [3.0] * 3


@pytest.mark.parametrize("changes, field", [({"late_guidance": 0.5}, "late_guidance"),
                                            ({"late_guidance": float("nan")}, "late_guidance"),
                                            ({"guidance_steps": 1.5}, "guidance_steps")])
def test_bad_late_guidance_is_refused(tiny, changes, field):
    model, trajs = tiny
    with pytest.raises(PromptError) as caught:
        swap(model, trajs["exact"], TARGET, SwapOptions(**changes), progress=False)
    assert caught.value.field == field


def test_late_guidance_applies_to_exact_trajectories_only(tiny):
    """A replayed source (ddim, null-text) must keep one guidance: null-text's embeddings are fitted to it."""
    model, trajs = tiny
    for method in ("ddim", "null-text"):
        result = swap(model, trajs[method], TARGET, SwapOptions(late_guidance=2.0), progress=False)
        assert result.late_guidance is None
        same = swap(model, trajs[method], TARGET, progress=False)
        assert torch.equal(result.target_latents, same.target_latents)


def test_mask_guidance_one_keeps_an_identical_prompt_exact_inside_the_mask(tiny):
    """With explicit blend words an identical prompt has a mask; at mask guidance 1 the lag is exactly the
    source's guidance-1 correction, so the target stays the reconstruction. Without it the target
    samples at 7.5 inside the mask and leaves it."""
    model, trajs = tiny
    traj = trajs["exact"]
    words = SwapOptions(blend_words=("circle",), blend_threshold=0.0)  # the mask covers every position
    exact = swap(model, traj, SOURCE, replace(words, mask_guidance=1.0), progress=False)
    assert exact.blend_mask is not None and bool(exact.blend_mask.all()) and exact.mask_guidance == 1.0
    assert (exact.target_latents - exact.source_latents).abs().max() <= 1e-4
    free = swap(model, traj, SOURCE, replace(words, mask_guidance=None), progress=False)
    assert free.mask_guidance is None
    assert (free.target_latents - free.source_latents).abs().max() > 1e-2
    three = swap(model, traj, SOURCE, replace(words, mask_guidance=3.0), progress=False)
    assert three.mask_guidance == 3.0
    gap = (three.target_latents - three.source_latents).abs().max()
    assert 1e-4 < gap < (free.target_latents - free.source_latents).abs().max()


def test_mask_guidance_needs_a_blend_and_known_source_latents(tiny):
    model, trajs = tiny
    on = SwapOptions(mask_guidance=3.0)
    assert SwapOptions.mask_guidance is None  # opt-in
    assert swap(model, trajs["exact"], TARGET, on, progress=False).mask_guidance == 3.0
    assert swap(model, trajs["exact"], TARGET, replace(on, blend_words=()), progress=False).mask_guidance is None
    inside = swap(model, trajs["exact"], TARGET, replace(on, correct_inside_mask=True), progress=False)
    assert inside.mask_guidance is None
    for method in ("ddim", "null-text"):
        result = swap(model, trajs[method], TARGET, on, progress=False)
        assert result.mask_guidance is None
        off = swap(model, trajs[method], TARGET, progress=False)
        assert torch.equal(result.target_latents, off.target_latents)


def test_mask_guidance_with_recorded_corrections_computes_the_source_cond(tiny):
    """The lag needs the source's conditional half at every masked step (computed there even where a
    recorded correction would spare it); recorded and online corrections give the same edit."""
    model, trajs = tiny
    traj = trajs["exact"]
    schedule = make_schedule(model, traj.num_steps)
    unrecorded = invert(model, schedule, traj.z_0[None], SOURCE, InversionOptions(method="exact", record_corrections=False),
                        progress=False)
    n = traj.num_steps
    on = SwapOptions(mask_guidance=3.0)
    recorded = swap(model, traj, TARGET, on, progress=False)
    online = swap(model, unrecorded, TARGET, on, progress=False)
    assert recorded.mask_guidance == online.mask_guidance == 3.0
    assert (recorded.target_latents - online.target_latents).abs().max() <= 1e-4
    assert online.unet_evaluations == 3 * n  # shared uncond: target uncond + cond, source cond
    # the source word's blend map already needs the source's conditional half at every step
    assert recorded.unet_evaluations == 3 * n
    # a blend word of the target only: the source's conditional half runs while the target borrows
    # attention, and with mask guidance also at every masked step
    target_word = SwapOptions(blend_words=("blue",), mask_guidance=3.0)
    borrowing, masked_from = injected_steps(SwapOptions.self_steps, n), injected_steps(SwapOptions.blend_start, n)
    assert borrowing < n and masked_from < borrowing
    guided = swap(model, traj, TARGET, target_word, progress=False)
    assert guided.mask_guidance is not None and guided.unet_evaluations == 3 * n
    free = swap(model, traj, TARGET, replace(target_word, mask_guidance=None), progress=False)
    assert free.unet_evaluations == 2 * n + borrowing


@pytest.mark.parametrize("value", [0.5, float("inf")])
def test_bad_mask_guidance_is_refused(tiny, value):
    model, trajs = tiny
    with pytest.raises(PromptError) as caught:
        swap(model, trajs["exact"], TARGET, SwapOptions(mask_guidance=value), progress=False)
    assert caught.value.field == "mask_guidance"


def test_default_blend_words_are_the_words_that_differ():
    assert differing_words(SOURCE, TARGET) == ("red", "blue")
    assert differing_words("a red circle", "a striped red circle") == ("striped",)
    assert differing_words("a striped red circle", "a red circle") == ("striped",)
    assert differing_words(SOURCE, SOURCE) == ()


@pytest.fixture(scope="module")
def toy_red_circle():
    from ddim_edit.model import load_model
    from ddim_edit.workflow import invert_image, prepare_image

    model = load_model("toy")
    image = prepare_image(model, "assets/examples/red-circle.png")
    traj = invert_image(model, image, "a solid red circle on a white background", make_schedule(model, 20),
                        InversionOptions(method="exact", record_corrections=False), progress=False)
    return model, image, traj


def test_identity_swap_on_the_bundled_model(toy_red_circle):
    model, image, traj = toy_red_circle
    result = swap(model, traj, "a solid red circle on a white background", progress=False)
    assert psnr(decode(model, result.target_latents), decode(model, result.source_latents)) >= 40


def test_blend_never_lowers_the_background(toy_red_circle):
    """The README's example: red → blue circle. Far from the circle the blend keeps the source."""
    import cv2

    model, image, traj = toy_red_circle
    target = "a solid blue circle on a white background"
    obj = (np.abs(image.pixels.astype(int) - image.pixels[0, 0].astype(int)).sum(-1) > 30).astype(np.uint8)
    far = cv2.dilate(obj, np.ones((9, 9), np.uint8)) == 0
    plain = swap(model, traj, target, SwapOptions(blend_words=()), progress=False)
    blended = swap(model, traj, target, progress=False)
    assert blended.blend_words == ("red", "blue") and blended.blend_mask is not None
    plain_image = edited_image(model, plain, image.pixels)
    blended_image = edited_image(model, blended, image.pixels)
    assert psnr(blended_image, image.pixels, mask=far) >= psnr(plain_image, image.pixels, mask=far)
    assert blended_image[32, 32, 2] > blended_image[32, 32, 0]  # the circle did turn blue


def test_each_branch_is_decoded_once_per_result(trajectories, monkeypatch):
    from ddim_edit.edits.prompt_swap import decoded, edited_image

    model, trajs = trajectories
    result = swap(model, trajs["exact"], TARGET, SwapOptions(blend_words=("circle",)), progress=False)
    calls = []
    real = model.decode_latents
    monkeypatch.setattr(model, "decode_latents", lambda latents: calls.append(1) or real(latents))
    first = edited_image(model, result)  # decodes the target and, for the blend, the source
    assert decoded(model, result, "target") is decoded(model, result, "target")
    assert np.array_equal(edited_image(model, result), first) and len(calls) == 2

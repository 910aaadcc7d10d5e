"""Edits change only what the words name: identity swaps, edit-time guidance, local blend against prompt-to-prompt."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddim_edit.edits.local_blend import (BlendRule, blend_mask, blended_pixels, change_weight, composite,
                                        soft_pixel_mask, voting_side)
from ddim_edit.edits.p2p_control import AttentionController, injected_steps
from ddim_edit.errors import PromptError
from ddim_edit.edits.prompt_swap import (SwapOptions, build_spec, differing_words, edited_image,
                                         guidance_per_step, swap)
from ddim_edit.inversion import METHODS, InversionOptions, invert
from ddim_edit.metrics import psnr
from ddim_edit.replay import reconstruct
from ddim_edit.workflow import decode, make_schedule

SOURCE = "a red circle on a white background"
TARGET = "a blue circle on a white background"


@pytest.fixture(scope="module")
def tiny(tiny_pipe):
    from ddim_edit.model import EditModel

    model = EditModel.from_pipeline(tiny_pipe, name="tiny")
    schedule = make_schedule(model, 6)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    options = {method: InversionOptions(method=method, fixed_point_iterations=3, null_text_steps=2)
               for method in METHODS}
    return model, {method: invert(model, schedule, z0, SOURCE, opts, progress=False) for method, opts in options.items()}


# ----------------------------------------------------------------------------- identity


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
            eps = model.unet(torch.cat([z[i], x]).float(), t, **cond.unet_kwargs()).sample.double()
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


# ----------------------------------------------------------------------------- mask guidance


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_coefficients_and_the_mask_correction_in_closed_form(prediction_type):
    """x_s = A x_t + B ε is the DDIM step; the lag is ε_inv − ε_c,src; the target's guided step plus the
    mask correction is the step with ε_c,tgt + λ + (g − 1)(ε_c,tgt − ε_u,tgt) (float64)."""
    from ddim_edit.edits.mask_guidance import inversion_lag, mask_correction
    from ddim_edit.schedule import ddim_coefficients, ddim_step, split_prediction

    gen = torch.Generator().manual_seed(3)
    z_t, x_t, eps_inv, src, cond, uncond = (torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64) for _ in range(6))
    alpha_t, alpha_prev = 0.3, 0.55
    a, b = ddim_coefficients(alpha_t, alpha_prev)
    z_s = ddim_step(eps_inv, z_t, alpha_t, alpha_prev, "epsilon")
    assert torch.allclose(z_s, a * z_t + b * eps_inv, atol=1e-12) and b < 0
    eps_src, _ = split_prediction(src, z_t, alpha_t, prediction_type)
    lag = inversion_lag(z_t, z_s, src, alpha_t, alpha_prev, prediction_type)
    assert torch.allclose(lag, eps_inv - eps_src, atol=1e-10)
    w, g = 7.5, 3.0
    guided = ddim_step(uncond + w * (cond - uncond), x_t, alpha_t, alpha_prev, prediction_type)
    corrected = guided + mask_correction(lag, cond, uncond, x_t, w, g, alpha_t, alpha_prev, prediction_type)
    eps_c, _ = split_prediction(cond, x_t, alpha_t, prediction_type)
    eps_u, _ = split_prediction(uncond, x_t, alpha_t, prediction_type)
    expected = a * x_t + b * (eps_c + lag + (g - 1) * (eps_c - eps_u))
    assert torch.allclose(corrected, expected, atol=1e-10)
    # g above the step's guidance is capped at it: the lag alone; no guidance: the lag alone
    assert torch.allclose(mask_correction(lag, cond, uncond, x_t, 2.0, g, alpha_t, alpha_prev, prediction_type), b * lag)
    assert torch.allclose(mask_correction(lag, cond, None, x_t, 1.0, g, alpha_t, alpha_prev, prediction_type), b * lag)


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


# ----------------------------------------------------------------------------- blend words and steps


def test_default_blend_words_are_the_words_that_differ():
    assert differing_words(SOURCE, TARGET) == ("red", "blue")
    assert differing_words("a red circle", "a striped red circle") == ("striped",)
    assert differing_words("a striped red circle", "a red circle") == ("striped",)
    assert differing_words(SOURCE, SOURCE) == ()


@pytest.mark.parametrize("fraction, n, expected", [(0.4, 50, 20), (0.35, 10, 3), (0.6, 4, 2), (1.0, 7, 7), (0.0, 9, 0)])
def test_injection_covers_int_f_times_n_steps_as_prompt_to_prompt(tiny_model, fraction, n, expected):
    assert injected_steps(fraction, n) == expected
    spec = build_spec(tiny_model, SOURCE, TARGET, SwapOptions(cross_steps=fraction, self_steps=fraction), 77)
    injected = [i for i in range(n) if spec.cross_edit(i, n) is not None]
    assert injected == list(range(expected))
    assert [i for i in range(n) if spec.self_injected(i, n)] == list(range(expected))


# ----------------------------------------------------------------------------- local blend vs prompt-to-prompt


def p2p_local_blend(step_stores, alpha_layers, latent_hw, threshold=0.3, k=1):
    """prompt-to-prompt's LocalBlend, written from the paper's code: the reference.

    ``step_stores``: per step, per branch, the list of the voting layers' maps [heads, res, res, L];
    the attention store sums them over steps; the mask is computed from the sum.
    """
    store = None
    for step in step_stores:
        store = step if store is None else [[a + b for a, b in zip(sa, sb)] for sa, sb in zip(store, step)]
    masks = []
    for branch, layers in enumerate(store):
        maps = torch.stack(layers)  # [layers, heads, res, res, L]
        maps = (maps * alpha_layers[branch]).sum(-1).mean((0, 1))  # words summed, layers and heads averaged
        mask = F.max_pool2d(maps[None, None], (k * 2 + 1, k * 2 + 1), (1, 1), padding=(k, k))
        mask = F.interpolate(mask, size=latent_hw)
        mask = mask / mask.max()
        masks.append(mask.gt(threshold)[0, 0])
    return masks[0] | masks[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blend_mask_matches_prompt_to_prompts_local_blend(tiny_model, seed):
    generator = torch.Generator().manual_seed(seed)
    heads, res, L, latent_hw = 2, 4, 77, (16, 16)
    words = {"source": [2], "target": [2, 3]}
    spec = build_spec(tiny_model, SOURCE, TARGET, SwapOptions(), L)
    controller = AttentionController(spec, words, blend_side=res, latent_hw=latent_hw)
    step_stores = []
    for step in range(3):
        controller.begin_step(step, 3)
        per_branch = []
        for branch in ("source", "target"):
            layers = []
            for layer in range(2):  # two voting layers at 4×4 ...
                probabilities = torch.rand(heads, res * res, L, generator=generator).softmax(-1)
                controller.store(f"up.{layer}", branch, probabilities.mean(0))
                layers.append(probabilities.reshape(heads, res, res, L))
            # ... and one finer layer that must not vote
            controller.store("down.0", branch, torch.rand(64, L, generator=generator).softmax(-1))
            per_branch.append(layers)
        step_stores.append(per_branch)
    alpha = [torch.zeros(L), torch.zeros(L)]
    alpha[0][words["source"]] = 1
    alpha[1][words["target"]] = 1
    for threshold in (0.3, 0.6, 0.8):
        expected = p2p_local_blend(step_stores, alpha, latent_hw, threshold)
        ours = blend_mask(controller.word_maps(), latent_hw, BlendRule(threshold, "max", 1))
        assert torch.equal(ours, expected)


def test_voting_side_is_prompt_to_prompts_16_of_64():
    assert voting_side([64, 32, 16, 8], 64) == 16
    assert voting_side([16, 8], 16) == 8  # no 4×4 layer: the nearest finer one
    assert voting_side([8, 4], 64) == 8


def test_pixel_composite_keeps_the_source_outside_the_grown_mask():
    source = np.full((32, 32, 3), 200, np.uint8)
    edited = np.zeros((32, 32, 3), np.uint8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[3:5, 3:5] = True
    soft = soft_pixel_mask(mask, (32, 32), dilate=1, feather=1)
    assert soft[12:20, 12:20].min() == 1.0  # the mask itself is fully the edit
    assert soft[0, 0] == 0.0
    mixed = composite(edited, source, soft)
    assert (mixed[soft == 0] == 200).all() and (mixed[12:20, 12:20] == 0).all()


def test_change_weight_is_a_linear_ramp_of_the_rgb_distance():
    source = np.zeros((1, 4, 3), np.uint8)
    edited = np.array([[[12, 16, 0], [24, 32, 0], [30, 40, 0], [60, 80, 0]]], np.uint8)  # distances 20, 40, 50, 100
    assert change_weight(edited, source, 20, 60).tolist() == [[0.0, 0.5, 0.75, 1.0]]
    with pytest.raises(PromptError, match="blend_change needs 0 ≤ LOW < HIGH"):
        change_weight(edited, source, 60, 20)


def test_blended_pixels_keep_the_source_where_the_edit_barely_moved():
    """Inside the mask: a faint change (distance 10) reverts to the source, a strong one (150) stays;
    outside it the source wins regardless. No pixel ends farther from the source than the edit."""
    source = np.full((32, 32, 3), 200, np.uint8)
    edited = source.copy()
    edited[8:24, 8:24] = (50, 200, 200)  # the edited object: distance 150
    edited[8:24, 24:32] = (210, 200, 200)  # faint re-rendering next to it: distance 10
    edited[0:4, 0:4] = (0, 0, 0)  # a strong change outside the mask
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:6, 2:8] = True
    out = blended_pixels(edited, source, mask, dilate=0, feather=0, change=(20, 60))
    assert (out[8:24, 8:24] == (50, 200, 200)).all()
    assert (out[8:24, 24:32] == 200).all() and (out[0:4, 0:4] == 200).all()
    plain = blended_pixels(edited, source, mask, dilate=0, feather=0, change=None)
    assert (plain[8:24, 24:32] == (210, 200, 200)).all()
    for result in (out, plain):
        assert (np.abs(result.astype(int) - source).sum(-1) <= np.abs(edited.astype(int) - source).sum(-1)).all()


# ----------------------------------------------------------------------------- the bundled model


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


# ----------------------------------------------------------------------------- edit-time guidance from the CLI


def test_cli_swap_and_inpaint_take_another_guidance_on_an_exact_trajectory(tmp_path, tiny_model_dir):
    import json

    from PIL import Image

    from tests.cli_helpers import run

    pixels = np.full((32, 32, 3), 240, np.uint8)
    pixels[8:24, 8:24] = (200, 40, 40)
    Image.fromarray(pixels).save(tmp_path / "red.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(tmp_path / "hole.png")
    traj = tmp_path / "red.traj.safetensors"
    common = ["--model", tiny_model_dir, "-q", "--format", "json"]
    inverted = run("invert", tmp_path / "red.png", "--prompt", SOURCE, "--method", "exact", "--steps", "4",
                   "-o", traj, *common)
    assert inverted.exit_code == 0, inverted.output
    swapped = run("swap", traj, "-t", TARGET, "--guidance", "3", "-o", tmp_path / "blue.png", *common)
    assert swapped.exit_code == 0, swapped.output
    assert json.loads(swapped.stdout)["unet_evaluations"] == 3 * 4  # corrections made at guidance 3
    inpainted = run("inpaint", tmp_path / "red.png", "--mask", tmp_path / "hole.png", "--trajectory", traj,
                    "--guidance", "3", "-o", tmp_path / "restored.png", *common)
    assert inpainted.exit_code == 0, inpainted.output
    refused = run("reconstruct", traj, "--guidance", "3", "-o", tmp_path / "recon.png", *common)
    assert refused.exit_code == 1 and "exactly at guidance 7.5" in refused.output


@pytest.mark.parametrize("flag, value, fragment", [
    ("--blend-change", "60,20", "0 ≤ LOW < HIGH"), ("--blend-change", "20", "LOW,HIGH or off"),
    ("--blend-change", "a,b", "expects a number"),
    ("--late-guidance", "0.5", "--late-guidance must be a guidance ≥ 1"), ("--late-guidance", "x", "expects a number"),
    ("--guidance-steps", "2", "--guidance-steps must be a fraction"),
    ("--mask-guidance", "0.5", "--mask-guidance must be a guidance ≥ 1"), ("--mask-guidance", "x", "expects a number")])
def test_cli_swap_refuses_a_bad_blend_change_or_guidance(tmp_path, tiny_model_dir, flag, value, fragment):
    from tests.cli_helpers import run

    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 240, np.uint8)).save(tmp_path / "grey.png")
    result = run("swap", tmp_path / "grey.png", "-s", SOURCE, "-t", TARGET, flag, value,
                 "--model", tiny_model_dir, "-q", "-o", tmp_path / "out.png")
    assert result.exit_code != 0 and fragment in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("flag, value, recorded", [
    ("--late-guidance", "2", {"late_guidance": 2.0, "guidance_steps": 0.3, "mask_guidance": None}),
    ("--mask-guidance", "3", {"late_guidance": None, "guidance_steps": None, "mask_guidance": 3.0})])
def test_cli_swap_late_or_mask_guidance_changes_the_edit_and_is_recorded(tmp_path, tiny_model_dir, flag, value,
                                                                          recorded):
    """Each changes the edit at the same cost (both are off by default); the parameters say what ran."""
    import json

    from PIL import Image

    from ddim_edit.images import read_parameters

    from tests.cli_helpers import run

    pixels = np.full((32, 32, 3), 240, np.uint8)
    pixels[8:24, 8:24] = (200, 40, 40)
    Image.fromarray(pixels).save(tmp_path / "red.png")
    common = ["--model", tiny_model_dir, "-q", "--format", "json", "--steps", "4", "-s", SOURCE, "-t", TARGET]
    given = run("swap", tmp_path / "red.png", flag, value, "-o", tmp_path / "a.png", *common)
    default = run("swap", tmp_path / "red.png", "-o", tmp_path / "b.png", *common)
    assert given.exit_code == 0 and default.exit_code == 0, given.output + default.output
    first, second = read_parameters(tmp_path / "a.png"), read_parameters(tmp_path / "b.png")
    assert {key: first[key] for key in recorded} == recorded
    assert all(second[key] is None for key in recorded)
    assert json.loads(given.stdout)["unet_evaluations"] == json.loads(default.stdout)["unet_evaluations"]
    a, b = (np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png"))
    assert not np.array_equal(a, b)

"""SDXL end to end on tiny SDXL-shaped pipelines built in code (epsilon and v-prediction, Euler config)."""

import numpy as np
import pytest
import torch

from ddim_edit.conditioning import Conditioning, PromptEmbeds
from ddim_edit.edits.inpaint import inpaint
from ddim_edit.edits.prompt_swap import SwapOptions, cross_attention_widths, edited_image, swap
from ddim_edit.edits.local_blend import voting_side
from ddim_edit.edits.style import StyleOptions, styleid_layers, style_transfer
from ddim_edit.images import to_tensor
from ddim_edit.inversion import InversionOptions, invert
from ddim_edit.metrics import psnr
from ddim_edit.model import EditModel
from ddim_edit.replay import reconstruct
from ddim_edit.sampler import sample
from ddim_edit.schedule import Schedule
from ddim_edit.testing import tiny_sdxl_pipeline
from ddim_edit.workflow import decode

SOURCE = "a red circle on a white background"
TARGET = "a blue circle on a white background"
STEPS = 8


def circle_image(size: int = 32, colour=(220, 30, 30)) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size, 3), 245, np.uint8)
    image[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2] = colour
    return image


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def xl(request):
    pipe = tiny_sdxl_pipeline(prediction_type=request.param)
    return pipe, EditModel.from_pipeline(pipe, name=f"tiny-xl-{request.param}")


def test_sdxl_conditioning_matches_the_pipeline_encode_prompt(xl):
    pipe, model = xl
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(SOURCE, device="cpu", num_images_per_prompt=1,
                                                                   do_classifier_free_guidance=True)
    cond, uncond = model.encode([SOURCE], (32, 32)), model.encode_negative([""], (32, 32))
    assert torch.equal(cond.hidden, embeds) and torch.equal(cond.added["text_embeds"], pooled)
    assert torch.equal(uncond.hidden, negative) and torch.equal(uncond.added["text_embeds"], negative_pooled)
    assert float(uncond.hidden.abs().sum()) == 0  # force_zeros_for_empty_prompt
    assert cond.added["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]
    # a given negative prompt is encoded, not zeroed
    assert float(model.encode_negative(["a blue square"]).hidden.abs().sum()) > 0


def test_sdxl_replay_matches_the_diffusers_pipeline_with_ddim(xl):
    """Our sampler from x_T = StableDiffusionXLPipeline + DDIMScheduler from the same x_T (latents ≤ 1e-4)."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    pipe, model = xl
    # DDIMScheduler.from_config of an Euler config defaults to clip_sample=True (x̂_0 clipped to
    # [-1, 1], meant for pixel-space models); latent DDIM does not clip, and neither do we.
    ddim = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    reference = StableDiffusionXLPipeline(**{**pipe.components, "scheduler": ddim})
    reference.set_progress_bar_config(disable=True)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    expected = reference(SOURCE, height=32, width=32, num_inference_steps=STEPS, guidance_scale=5.0,
                         latents=x_T.clone(), output_type="latent").images
    schedule = Schedule.from_scheduler_config(model.scheduler_config, num_steps=STEPS)
    assert list(schedule.timesteps) == reference.scheduler.timesteps.tolist()
    conditioning = Conditioning(model.encode([SOURCE], (32, 32)), model.encode_negative([""], (32, 32)))
    with torch.no_grad():
        ours = sample(model, schedule, x_T.clone(), conditioning, 5.0, progress=False)
    assert (ours.float() - expected).abs().max() <= 1e-4


def _invert(model, method="exact", image=None, steps=STEPS, **kw):
    z0 = model.encode_image(to_tensor(circle_image() if image is None else image))
    schedule = Schedule.from_scheduler_config(model.scheduler_config, num_steps=steps)
    return invert(model, schedule, z0, SOURCE, InversionOptions(method=method, **kw), progress=False), z0


def test_sdxl_exact_inversion_reconstructs_to_the_vae_round_trip(xl):
    _, model = xl
    traj, z0 = _invert(model)
    assert traj.metadata["model_family"] == "sdxl"
    assert z0.dtype == torch.float32
    with torch.no_grad():
        back = reconstruct(model, traj, progress=False)
    assert psnr(decode(model, back), decode(model, z0)) >= 35


def test_sdxl_identity_swap_is_the_reconstruction(xl):
    _, model = xl
    traj, _ = _invert(model)
    result = swap(model, traj, SOURCE, progress=False)
    reconstruction = reconstruct(model, traj, progress=False)
    assert (result.target_latents - result.source_latents).abs().max() <= 1e-6
    assert psnr(decode(model, result.target_latents), decode(model, reconstruction)) >= 40


def test_sdxl_swap_with_blend_and_maps_runs(xl):
    _, model = xl
    traj, _ = _invert(model, method="ddim")
    result = swap(model, traj, TARGET, SwapOptions(keep_maps=True), progress=False)
    assert result.blend_words == ("red", "blue")
    assert torch.isfinite(result.target_latents).all()
    assert not torch.allclose(result.target_latents, result.source_latents)
    image = edited_image(model, result, circle_image())
    assert image.shape == (32, 32, 3)


def test_sdxl_inpaint_keeps_the_unmasked_pixels(xl):
    _, model = xl
    traj, _ = _invert(model, method="ddim")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    result = inpaint(model, traj, circle_image(), mask, progress=False)
    assert result.image.shape == (32, 32, 3)
    keep = np.ones((32, 32), bool)
    keep[4:28, 4:28] = False  # well outside the feathered mask
    assert np.array_equal(result.image[keep], circle_image()[keep])


def test_sdxl_style_runs_on_the_decoder_layers_with_attention(xl):
    _, model = xl
    content, _ = _invert(model, method="ddim", steps=4)
    style, _ = _invert(model, method="ddim", image=circle_image(colour=(30, 30, 220)), steps=4)
    layers = styleid_layers(model)
    # SDXL's decoder: up_blocks.0 (lowest resolution, 2 layers here; 10 in SDXL) keeps the content's
    # layout; up_blocks.1 is injected; up_blocks.2 has no attention.
    assert layers and all(name.startswith("up_blocks.1.") and ".attn1." in name for name in layers)
    result = style_transfer(model, content, style, StyleOptions(), progress=False)
    assert torch.isfinite(result.output).all()


def test_sdxl_blend_votes_with_the_coarse_cross_attention_layers(xl):
    _, model = xl
    widths = cross_attention_widths(model, 8)
    assert sorted(set(widths)) == [2, 4]  # no attention at full resolution (SDXL's first block)
    assert voting_side(widths, 8) == 2


def test_prompt_embeds_rows_and_cat_keep_added_conditioning(xl):
    _, model = xl
    embeds = model.encode([SOURCE, TARGET, ""], (32, 48))
    picked = PromptEmbeds.cat([embeds.rows(2), embeds.rows(0)])
    assert torch.equal(picked.hidden, embeds.hidden[[2, 0]])
    assert torch.equal(picked.added["text_embeds"], embeds.added["text_embeds"][[2, 0]])
    assert picked.added["time_ids"].tolist() == [[32.0, 48.0, 0.0, 0.0, 32.0, 48.0]] * 2
    with pytest.raises(ValueError, match="model families"):
        PromptEmbeds.cat([picked, PromptEmbeds(picked.hidden)])



@pytest.mark.parametrize("force_upcast,vae_dtype", [(True, torch.float32), (False, torch.float16)])
def test_fp16_keeps_the_vae_in_fp32_when_its_config_says_so(force_upcast, vae_dtype):
    """SDXL's VAE overflows in fp16: its config says force_upcast, as diffusers reads it."""
    pipe = tiny_sdxl_pipeline()
    pipe.vae.register_to_config(force_upcast=force_upcast)
    model = EditModel.from_pipeline(pipe, name="xl", dtype=torch.float16)
    assert next(model.vae.parameters()).dtype == vae_dtype
    assert next(model.denoiser.parameters()).dtype == torch.float16
    assert next(model.text_encoder_2.parameters()).dtype == torch.float16

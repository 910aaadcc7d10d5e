"""The flow families' adapters (ddim_edit/flow_model.py, sd3_model.py, flux_model.py) against diffusers'
own StableDiffusion3Pipeline and FluxPipeline, and inversion on them."""

from __future__ import annotations

import math

import pytest
import torch

from ddim_edit.errors import PromptError, ScheduleError, TrajectoryError
from ddim_edit.inversion import InversionOptions, invert
from ddim_edit.replay import reconstruct, trajectory_schedule
from ddim_edit.sampler import Conditioning, sample
from ddim_edit.trajectory import Trajectory
from tests.flow_helpers import GUIDANCE, PROMPT, SIDE, flow_model, pipeline_sample, start_noise

KINDS = ("sd3", "sd3-no-t5", "flux", "flux2")


@pytest.fixture(scope="module", params=KINDS)
def flow(request):
    return (request.param, *flow_model(request.param))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def test_replay_equals_the_diffusers_pipeline(flow):
    """Same starting noise, sigmas and prompt: the engine's sampler lands where the pipeline does."""
    kind, pipe, model = flow
    steps = 5
    x_T = start_noise(model)
    schedule = model.make_schedule(steps, image_size=(SIDE, SIDE))
    conditioning = Conditioning(model.encode([PROMPT], (SIDE, SIDE)), model.encode_negative([""], (SIDE, SIDE)))
    ours = sample(model, schedule, x_T, conditioning, GUIDANCE[kind], progress=False)
    theirs = pipeline_sample(pipe, model, x_T, steps, GUIDANCE[kind])
    assert pipe.scheduler.sigmas.tolist() == list(schedule.sigmas)  # the pipeline's own sigmas (FLUX: shifted by μ)
    assert model.DEFAULT_GUIDANCE == GUIDANCE[kind]
    assert float((ours.float() - theirs).abs().max()) <= 1e-4


@pytest.mark.parametrize("method", ["exact", "fixed-point"])
def test_inversion_reconstructs_to_the_vae_round_trip(flow, method, tmp_path):
    kind, _, model = flow
    pixels = torch.rand(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(3))
    z0 = model.encode_image(pixels)
    schedule = model.make_schedule(8, image_size=(SIDE, SIDE))
    # FLUX.2's shift keeps σ high until a last step from about 0.5 to 0 on a 16-token image: the
    # fixed point of that step needs more than the default 10 iterations (33.7 dB at 10, 47 dB at 30)
    options = InversionOptions(method=method, guidance_scale=GUIDANCE[kind], fixed_point_iterations=30)
    traj = invert(model, schedule, z0, PROMPT, options, progress=False)
    traj.save(tmp_path / "t.safetensors")
    loaded = Trajectory.load(tmp_path / "t.safetensors")
    assert loaded.timesteps == traj.timesteps and isinstance(loaded.timesteps[0], float)
    assert loaded.metadata["schedule"]["sigmas"] == list(schedule.sigmas)
    assert loaded.metadata["model_family"] == model.family
    round_trip = model.decode_latents(z0)
    assert psnr(model.decode_latents(reconstruct(model, loaded, progress=False)), round_trip) >= 35.0
    # FLUX's guidance is a model input: it inverts at the replay's guidance, one evaluation per step
    per_step = 1 if model.EMBEDDED_GUIDANCE else 2
    if method == "exact":
        assert loaded.metadata["unet_evaluations"] == 8 + 8 * per_step
        assert loaded.metadata["inversion_guidance"] == (GUIDANCE[kind] if model.EMBEDDED_GUIDANCE else 1.0)


def test_plain_inversion_is_the_euler_step_backwards():
    """The plain flow inversion step is x_i = x_{i+1} + (σ_i − σ_{i+1}) v(x_{i+1}, t_i), transcribed here."""
    _, model = flow_model("flux")
    z0 = model.encode_image(torch.rand(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(4)))
    schedule = model.make_schedule(4, image_size=(SIDE, SIDE))
    traj = invert(model, schedule, z0, PROMPT, InversionOptions(method="ddim", guidance_scale=3.5), progress=False)
    cond = model.encode([PROMPT])
    x = z0.double()
    for i in range(3, -1, -1):
        v = model.denoise(x, schedule.timesteps[i], cond, None, 3.5).double()
        x = x + (schedule.sigmas[i] - schedule.sigmas[i + 1]) * v
        assert torch.allclose(traj.latents[i][None], x, atol=1e-5)


def test_refusals_in_one_line():
    _, flux = flow_model("flux")
    z0 = torch.zeros(1, 4, SIDE // 8, SIDE // 8)
    schedule = flux.make_schedule(3)
    for method in ("null-text", "negative-prompt"):
        with pytest.raises(PromptError, match="guidance is a model input"):
            invert(flux, schedule, z0, PROMPT, InversionOptions(method=method), progress=False)
    with pytest.raises(ScheduleError, match="flow model"):
        flux.make_schedule(3, spacing="trailing")
    with pytest.raises(ScheduleError, match="flow model"):
        flux.make_schedule(3, timesteps=[999, 500])
    traj = invert(flux, schedule, z0, PROMPT, InversionOptions(method="ddim", guidance_scale=3.5), progress=False)
    _, sd3 = flow_model("sd3")
    with pytest.raises(TrajectoryError, match="made with a FLUX model"):
        trajectory_schedule(sd3, traj)


def test_a_ddim_trajectory_is_refused_by_a_flow_model(tiny_model):
    z0 = torch.zeros(1, 4, 8, 8)
    traj = invert(tiny_model, tiny_model.make_schedule(3), z0, PROMPT, InversionOptions(), progress=False)
    _, sd3 = flow_model("sd3")
    with pytest.raises(TrajectoryError, match="made with a Stable Diffusion model"):
        trajectory_schedule(sd3, traj)


def test_flux_shift_follows_the_image_size():
    """FLUX's μ grows with the number of image tokens, as FluxPipeline computes it."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    pipe, flux = flow_model("flux")
    small, large = flux.make_schedule(4, image_size=(64, 64)), flux.make_schedule(4, image_size=(256, 128))
    assert large.sigmas[1] > small.sigmas[1]
    config = pipe.scheduler.config
    assert flux.shift_mu((256, 128), 4) == calculate_shift(16 * 8, config.base_image_seq_len, config.max_image_seq_len,
                                                        config.base_shift, config.max_shift)
    assert flux.size_multiple == 16 and flux.native_size == 1024


@pytest.mark.parametrize("kind", ["sd3", "flux", "flux2"])
def test_identity_swap_equals_the_reconstruction(kind):
    """A swap whose target is the source prompt (exact trajectory) is the reconstruction (≥ 40 dB)."""
    from ddim_edit.edits.prompt_swap import SwapOptions, swap

    _, model = flow_model(kind)
    z0 = model.encode_image(torch.rand(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(5)))
    schedule = model.make_schedule(6, image_size=(SIDE, SIDE))
    traj = invert(model, schedule, z0, PROMPT, InversionOptions(method="exact", guidance_scale=GUIDANCE[kind]),
                  progress=False)
    reconstruction = model.decode_latents(reconstruct(model, traj, progress=False))
    result = swap(model, traj, PROMPT, SwapOptions(keep_maps=True), progress=False)
    assert psnr(model.decode_latents(result.target_latents), reconstruction) >= 40.0
    maps = result.attention_maps
    assert maps is not None and len(maps["target"]) == len(model.prompt_tokens(PROMPT))
    changed = swap(model, traj, PROMPT.replace("red", "blue"), SwapOptions(), progress=False)
    assert psnr(model.decode_latents(changed.target_latents), reconstruction) < 40.0  # the edit did something


@pytest.mark.parametrize("kind", ["sd3", "flux", "flux2"])
def test_style_injects_on_the_image_tokens_of_joint_attention(kind):
    """StyleID on a transformer: the decoder-stage joint sites; an image styled by itself with γ = 1 and
    T = 1 attends exactly as without injection (its own queries, its keys and values), so the output is the
    content's reconstruction; a different style image changes it."""
    from ddim_edit.edits.style import StyleOptions, style_transfer, styleid_layers

    _, model = flow_model(kind)
    schedule = model.make_schedule(4, image_size=(SIDE, SIDE))
    trajectories = [invert(model, schedule, model.encode_image(torch.rand(1, 3, SIDE, SIDE, generator=torch.Generator()
                                                                          .manual_seed(seed))), PROMPT,
                           InversionOptions(method="exact", guidance_scale=1.0, record_corrections=False), progress=False)
                    for seed in (6, 7)]
    layers = styleid_layers(model)
    assert layers and all(model.site(name).stage == "decoder" for name in layers)
    same = style_transfer(model, trajectories[0], trajectories[0], StyleOptions(gamma=1.0, temperature=1.0, adain=False),
                          progress=False)
    assert torch.allclose(same.latents.float(), trajectories[0].z_0[None].float(), atol=1e-4)
    other = style_transfer(model, trajectories[0], trajectories[1], StyleOptions(), progress=False)
    assert float((other.latents.float() - trajectories[0].z_0[None].float()).abs().max()) > 1e-3


def test_a_step_distilled_klein_samples_without_guidance():
    """FLUX.2 [klein]'s distilled models ignore the guidance, as Flux2KleinPipeline does: one evaluation a
    step whatever --guidance says, and the methods that fit classifier-free guidance are refused."""
    from ddim_edit.model import EditModel
    from ddim_edit.testing import tiny_flux2_klein_pipeline

    pipe = tiny_flux2_klein_pipeline()
    pipe.register_to_config(is_distilled=True)
    model = EditModel.from_pipeline(pipe, name="tiny-distilled")
    assert not model.classifier_free and model.DEFAULT_GUIDANCE == 1.0
    x_T = start_noise(model)
    schedule = model.make_schedule(3, image_size=(SIDE, SIDE))
    conditioning = Conditioning(model.encode([PROMPT]), model.encode_negative([""]))
    before = model.unet_evaluations
    ours = sample(model, schedule, x_T, conditioning, 4.0, progress=False)
    assert model.unet_evaluations - before == 3
    assert float((ours.float() - pipeline_sample(pipe, model, x_T, 3, 4.0)).abs().max()) <= 1e-4
    with pytest.raises(PromptError, match="guidance-distilled"):
        invert(model, schedule, torch.zeros_like(x_T), PROMPT, InversionOptions(method="null-text"), progress=False)

"""Inversion methods: closed-form exactness, fixed-point and exact reconstruction, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from ddim_edit.errors import DdimEditError
from ddim_edit.inversion import InversionOptions, invert, invert_latents
from ddim_edit.model import EditModel
from ddim_edit.replay import reconstruct
from ddim_edit.sampler import Conditioning, sample
from ddim_edit.schedule import ddim_inverse_step, Schedule
from ddim_edit.testing import tiny_pipeline


class TimeOnlyDenoiser:
    """ε depends on t only: DDIM inversion is then exactly the sampler's inverse."""

    unet_evaluations = 0

    def denoise(self, latents, t, cond, uncond, guidance_scale):
        torch.manual_seed(int(t))
        return torch.randn(latents.shape[1:], dtype=torch.float64).expand_as(latents).to(latents.dtype)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace", "quadratic"])
def test_time_only_denoiser_round_trip_is_exact(tiny_pipe, spacing):
    schedule = Schedule.from_scheduler_config(tiny_pipe.scheduler.config, num_steps=25, spacing=spacing)
    z0 = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = TimeOnlyDenoiser()
    latents, _ = invert_latents(model, schedule, z0, None, progress=False)
    back = sample(model, schedule, latents[0], Conditioning(None), 1.0, progress=False)
    assert (back.double() - z0).abs().max() <= 1e-6


class LinearDenoiser:
    """ε = c·z: an inversion step's fixed-point map is then affine, z ← A·z_s + B·c·z."""

    unet_evaluations = 0

    def __init__(self, c: float):
        self.c = c

    def denoise(self, latents, t, cond, uncond, guidance_scale):
        return self.c * latents


@pytest.mark.parametrize("gain", [0.5, -1.5])  # B·c: contracting, and diverging (oscillating)
def test_fixed_point_keeps_the_best_iterate(tiny_pipe, gain):
    schedule = Schedule.from_scheduler_config(tiny_pipe.scheduler.config, num_steps=2)
    a_s, a_t = schedule.alpha_prod(2), schedule.alpha_prod(1)  # the first inversion step, z_0 → z_1
    b = math.sqrt(1 - a_t) - math.sqrt(a_t / a_s) * math.sqrt(1 - a_s)
    model = LinearDenoiser(gain / b)
    z0 = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fixed = math.sqrt(a_t / a_s) * z0 / (1 - gain)  # z* = A·z_s / (1 − B·c)
    iterates = [z0]
    for _ in range(10):
        iterates.append(ddim_inverse_step(model.c * iterates[-1], z0, a_s, a_t))
    last_error = (iterates[-1] - fixed).norm().item()

    latents, used = invert_latents(model, schedule, z0, None, iterations=10, tolerance=1e-12, progress=False,
                                   damping=1.0)
    error = (latents[1] - fixed).norm().item()
    assert used[1] == 10
    if gain > 0:  # contracting: the last iterate, the closest of all
        assert torch.equal(latents[1], iterates[-1])
    else:  # diverging: plain iteration ends 1.5^9 times farther than its first estimate; the best is kept
        assert error < last_error / 10
        assert any(torch.equal(latents[1], z) for z in iterates[1:-1])
    if gain < 0:  # the damped retry (β = 0.3 by default) converges where the plain iteration diverges
        residuals: list[float] = []
        damped, used = invert_latents(model, schedule, z0, None, iterations=30, tolerance=1e-10, progress=False,
                                      residuals=residuals)
        best_plain = min((z - fixed).norm().item() for z in iterates[1:])
        assert (damped[1] - fixed).norm().item() < best_plain / 100
        assert residuals[1] <= 1e-10 and used[1] > 30  # the plain attempt, then the damped one


def _recon_error(model, schedule, z0, method, guidance=1.0, **kw):
    options = InversionOptions(method=method, guidance_scale=guidance, **kw)
    traj = invert(model, schedule, z0, "a red cat", options, progress=False)
    z = reconstruct(model, traj, progress=False)
    return (z - z0).abs().max().item(), traj


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_fixed_point_beats_plain_ddim_tenfold(tiny_model, guidance):
    schedule = Schedule.from_scheduler_config(tiny_model.scheduler_config, num_steps=10)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    plain, _ = _recon_error(tiny_model, schedule, z0, "ddim", guidance=guidance)
    fixed, traj = _recon_error(tiny_model, schedule, z0, "fixed-point", guidance=guidance)
    assert fixed <= plain / 10, f"fixed-point {fixed:.3e} vs ddim {plain:.3e}"
    assert max(traj.metadata["fixed_point_iterations"]) > 1
    assert traj.metadata["inversion_guidance"] == guidance  # fixed-point inverts at the replay guidance


def test_exact_reconstructs_with_guidance(tiny_model):
    schedule = Schedule.from_scheduler_config(tiny_model.scheduler_config, num_steps=10)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    plain, _ = _recon_error(tiny_model, schedule, z0, "ddim", guidance=7.5)
    exact, traj = _recon_error(tiny_model, schedule, z0, "exact", guidance=7.5)
    assert exact <= 1e-5, f"exact max abs error {exact:.3e}"
    assert plain > 100 * exact
    assert traj.corrections.shape == (10, 4, 8, 8)


def test_negative_prompt_inversion_replays_conditional_path(tiny_model):
    schedule = Schedule.from_scheduler_config(tiny_model.scheduler_config, num_steps=10)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    npi, traj = _recon_error(tiny_model, schedule, z0, "negative-prompt", guidance=7.5)
    cond_only, _ = _recon_error(tiny_model, schedule, z0, "ddim", guidance=1.0)
    assert traj.metadata["negative_prompt"] == "a red cat"
    assert npi == pytest.approx(cond_only, rel=1e-4, abs=1e-6)


def test_null_text_improves_guided_reconstruction(tiny_model):
    schedule = Schedule.from_scheduler_config(tiny_model.scheduler_config, num_steps=5)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    plain, _ = _recon_error(tiny_model, schedule, z0, "ddim", guidance=7.5)
    null, traj = _recon_error(tiny_model, schedule, z0, "null-text", guidance=7.5, null_text_steps=20)
    assert traj.null_embeddings.shape[0] == 5
    assert null < plain / 2, f"null-text {null:.3e} vs ddim {plain:.3e}"


@pytest.mark.parametrize("method", ["ddim", "fixed-point", "exact"])
def test_two_runs_are_bitwise_equal(tiny_model, method):
    schedule = Schedule.from_scheduler_config(tiny_model.scheduler_config, num_steps=6)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    runs = []
    for _ in range(2):
        traj = invert(tiny_model, schedule, z0, "a cat", InversionOptions(method=method), progress=False)
        runs.append((traj, reconstruct(tiny_model, traj, progress=False)))
    assert torch.equal(runs[0][0].latents, runs[1][0].latents)
    assert torch.equal(runs[0][1], runs[1][1])


PROMPT = "a red circle on a white background"


def diffusers_inversion(pipe, z0, cond, steps):
    """Plain DDIM inversion with diffusers' DDIMInverseScheduler (the DiffEdit / pix2pix-zero loop)."""
    from diffusers import DDIMInverseScheduler

    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse.set_timesteps(steps)
    z = z0.clone()
    with torch.no_grad():
        for t in inverse.timesteps:
            out = pipe.unet(z, t, encoder_hidden_states=cond).sample
            z = inverse.step(out, t, z).prev_sample
    return z


def _setup(prediction_type, steps):
    pipe = tiny_pipeline(prediction_type=prediction_type)
    model = EditModel.from_pipeline(pipe, name="tiny")
    schedule = Schedule.from_scheduler_config(model.scheduler_config, num_steps=steps)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    return pipe, model, schedule, z0, model.encode([PROMPT])


def test_epsilon_inversion_equals_diffusers_inverse_scheduler():
    pipe, model, schedule, z0, cond = _setup("epsilon", 10)
    with torch.no_grad():
        ours, _ = invert_latents(model, schedule, z0, cond, progress=False)
    theirs = diffusers_inversion(pipe, z0, cond.hidden, 10)
    assert (ours[0].float() - theirs).abs().max() <= 1e-5


def test_v_prediction_inversion_converts_with_the_models_timestep():
    """One middle step, float64 by hand: ours uses ᾱ_t, diffusers ᾱ_s; each matches its formula."""
    from diffusers import DDIMInverseScheduler

    pipe, model, schedule, z0, cond = _setup("v_prediction", 10)
    with torch.no_grad():
        ours, _ = invert_latents(model, schedule, z0, cond, progress=False)
        k = 5  # the step from s = timesteps[k + 1] up to t = timesteps[k]
        t, z = schedule.timesteps[k], ours[k + 1].float()
        v = pipe.unet(z, t, encoder_hidden_states=cond.hidden).sample.double()
    a_s, a_t = schedule.alpha_prod(k + 1), schedule.alpha_prod(k)

    def step(a_conv):
        eps = math.sqrt(a_conv) * v + math.sqrt(1 - a_conv) * z.double()
        x0 = (z.double() - math.sqrt(1 - a_s) * eps) / math.sqrt(a_s)
        return math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * eps

    assert (ours[k] - step(a_t)).abs().max() <= 1e-5
    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse.set_timesteps(10)
    theirs = inverse.step(v.float(), t, z).prev_sample.double()
    assert (theirs - step(a_s)).abs().max() <= 1e-5
    assert (ours[k] - theirs).abs().max() > 1e-2  # the conventions really differ


@pytest.mark.parametrize("steps", [10, 25])
def test_v_prediction_inversion_reconstructs_better_with_the_samplers_conversion(steps):
    """Plain DDIM inversion then sampling (guidance 1): ᾱ_t (ours) lands closer to z_0 than ᾱ_s."""
    pipe, model, schedule, z0, cond = _setup("v_prediction", steps)
    with torch.no_grad():
        ours, _ = invert_latents(model, schedule, z0, cond, progress=False)
        theirs = diffusers_inversion(pipe, z0, cond.hidden, steps)
        back_ours = sample(model, schedule, ours[0], Conditioning(cond), 1.0, progress=False)
        back_theirs = sample(model, schedule, theirs.double(), Conditioning(cond), 1.0, progress=False)
    error_ours = float((back_ours - z0.double()).norm())
    error_theirs = float((back_theirs - z0.double()).norm())
    assert error_ours < error_theirs


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

"""Inversion's ε conversion for v-prediction models (SD 2.x 768), against diffusers' DDIMInverseScheduler.

Both evaluate the UNet at the current latent z_s with the *next* timestep t. For an ε model they take
the same step (tested to 1e-5). For a v model the output must be turned into ε: diffusers converts
with ᾱ_s, the level of the latent it was given; ddim-edit converts with ᾱ_t, the level of the
timestep the model was told, which is what the sampler does at t, so inversion's ε is exactly the
sampler's ε function evaluated at z_s (the approximation ε(z_t, t) ≈ ε(z_s, t) and nothing else).
"""

import math

import pytest
import torch

from ddim_edit.inversion import invert_latents
from ddim_edit.model import EditModel
from ddim_edit.sampler import Conditioning, sample
from ddim_edit.schedule import Schedule
from ddim_edit.testing import tiny_pipeline

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

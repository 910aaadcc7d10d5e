"""The DDIM schedule (ddim_edit/schedule.py): timesteps for every spacing, steps and their inverses in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddim_edit.schedule import ddim_inverse_step, ddim_step, make_timesteps, Schedule, split_prediction
from ddim_edit.testing import tiny_pipeline


def test_neighbours_read_from_list_for_linspace():
    # diffusers computes prev = t - T//n, which is wrong for linspace; we read the next list entry.
    config = tiny_pipeline().scheduler.config
    schedule = Schedule.from_scheduler_config(config, num_steps=10, spacing="linspace")
    assert schedule.timesteps == tuple(make_timesteps(10, 1000, "linspace"))
    a_t, a_s = schedule.step_pair(0)
    assert a_t == float(schedule.alphas_cumprod[999]) and a_s == float(schedule.alphas_cumprod[888])
    assert schedule.step_pair(9)[1] == schedule.final_alpha_prod


def test_custom_and_quadratic_timesteps():
    config = tiny_pipeline().scheduler.config
    quad = Schedule.from_scheduler_config(config, num_steps=10, spacing="quadratic")
    gaps = [a - b for a, b in zip(quad.timesteps, quad.timesteps[1:])]
    assert gaps == sorted(gaps, reverse=True), "quadratic spacing is denser near t = 0"
    custom = Schedule.from_scheduler_config(config, timesteps=[999, 500, 100, 20, 5])
    assert custom.timesteps == (999, 500, 100, 20, 5) and custom.spacing == "custom"


@pytest.mark.parametrize("bad", [0, -3, 1001])
def test_bad_step_counts(bad):
    from ddim_edit.errors import ScheduleError

    with pytest.raises(ScheduleError):
        make_timesteps(bad, 1000, "leading")


def test_ddim_step_and_inverse_are_inverse_closed_form():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    eps = torch.randn_like(x)
    a_t, a_s = 0.3, 0.9
    x_s = ddim_step(eps, x, a_t, a_s)
    assert torch.allclose(ddim_inverse_step(eps, x_s, a_s, a_t), x, atol=1e-12)
    # closed form: x_s = sqrt(a_s) * x0 + sqrt(1 - a_s) * eps with x0 = (x - sqrt(1-a_t) eps)/sqrt(a_t)
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    assert torch.allclose(x_s, a_s ** 0.5 * x0 + (1 - a_s) ** 0.5 * eps, atol=1e-12)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_prediction_type_conversions_agree(prediction_type):
    torch.manual_seed(0)
    x0 = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    eps = torch.randn_like(x0)
    a = 0.42
    x_t = a ** 0.5 * x0 + (1 - a) ** 0.5 * eps
    output = {"epsilon": eps, "sample": x0, "v_prediction": a ** 0.5 * eps - (1 - a) ** 0.5 * x0}[prediction_type]
    got_eps, got_x0 = split_prediction(output, x_t, a, prediction_type)
    assert torch.allclose(got_eps, eps, atol=1e-12) and torch.allclose(got_x0, x0, atol=1e-12)


@pytest.mark.parametrize("scheduler_name", ["EulerDiscreteScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler"])
def test_any_shipped_scheduler_gives_ddim_with_its_betas(scheduler_name):
    import diffusers

    base = tiny_pipeline().scheduler.config
    other = getattr(diffusers, scheduler_name).from_config(base)
    ours = Schedule.from_scheduler_config(other.config, num_steps=10)
    reference = Schedule.from_scheduler_config(base, num_steps=10)
    assert torch.equal(ours.alphas_cumprod, reference.alphas_cumprod)
    assert ours.fingerprint() == reference.fingerprint() and ours.timesteps == reference.timesteps


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


def test_the_stepper_methods_agree_in_closed_form():
    """The schedule as the DDIM ODE's stepper (float64): the inverse step undoes the step for the same ε;
    a step maps the noised x_0 at one position to the noised x_0 at the next (η = 0, the same ε); x_s = A x_t + B ε;
    the forward process scales by √(ᾱ_{k−1}/ᾱ_k) without noise; a segment keeps its last state's ᾱ."""
    from diffusers import DDIMScheduler

    schedule = Schedule.from_scheduler_config(DDIMScheduler().config, num_steps=10)
    gen = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    for i in (0, 4, 9):
        z_t = schedule.noised(x0, eps, i)
        z_s = schedule.step(eps, z_t, i)
        assert torch.allclose(z_s, schedule.noised(x0, eps, i + 1), atol=1e-10)
        assert torch.allclose(schedule.inverse_step(eps, z_s, i, evaluated_at=z_t), z_t, atol=1e-10)
        a, b = schedule.coefficients(i)
        assert torch.allclose(z_s, a * z_t + b * eps, atol=1e-10)
        assert torch.allclose(schedule.split(eps, z_t, i)[1], x0, atol=1e-10)
    ratio = schedule.alpha_prod(3) / schedule.alpha_prod(4)
    assert torch.allclose(schedule.forward_noised(x0, torch.zeros_like(x0), 4), ratio ** 0.5 * x0)
    part = schedule.segment(2, 5)
    assert part.timesteps == schedule.timesteps[2:5] and part.alpha_prod(3) == schedule.alpha_prod(5)

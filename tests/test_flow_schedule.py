"""The flow-matching Euler stepper (ddim_edit/flow_schedule.py): diffusers' sigmas and steps, and the
stepper's methods in closed form (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from ddim_edit.errors import ScheduleError
from ddim_edit.flow_schedule import FlowSchedule


def sd3_config():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0).config


def flux_config():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096).config


def test_sigmas_and_timesteps_are_diffusers_own():
    from diffusers import FlowMatchEulerDiscreteScheduler

    reference = FlowMatchEulerDiscreteScheduler.from_config(sd3_config())
    reference.set_timesteps(28)
    schedule = FlowSchedule.from_scheduler_config(sd3_config(), 28)
    assert schedule.sigmas == tuple(reference.sigmas.tolist()) and schedule.sigmas[-1] == 0.0
    assert schedule.timesteps == tuple(reference.timesteps.tolist()) and schedule.num_steps == 28
    # FLUX passes its own unshifted sigmas and the resolution's shift mu
    dynamic = FlowSchedule.from_scheduler_config(flux_config(), 4, sigmas=[1.0, 0.75, 0.5, 0.25], mu=0.8)
    shifted = [math.exp(0.8) / (math.exp(0.8) + (1 / s - 1)) for s in (1.0, 0.75, 0.5, 0.25)]
    assert dynamic.sigmas[:-1] == pytest.approx(shifted, abs=1e-6)


def test_step_is_diffusers_euler_step():
    from diffusers import FlowMatchEulerDiscreteScheduler

    reference = FlowMatchEulerDiscreteScheduler.from_config(sd3_config())
    reference.set_timesteps(5)
    schedule = FlowSchedule.from_scheduler_config(sd3_config(), 5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    for i, t in enumerate(reference.timesteps):
        v = torch.randn(1, 4, 8, 8, generator=gen)
        expected = reference.step(v, t, x, return_dict=False)[0]
        assert torch.allclose(schedule.step(v.double(), x.double(), i).float(), expected, atol=1e-6)
        x = expected


def test_the_stepper_methods_agree_in_closed_form():
    """The Euler step of the straight path maps (1 − σ_i) x_0 + σ_i ε to the next position; the inverse step
    undoes it; split recovers (ε, x_0); x_s = A x_t + B ε away from σ = 1; the forward process keeps the
    marginal; a segment keeps its last state's σ."""
    schedule = FlowSchedule.from_scheduler_config(sd3_config(), 10)
    gen = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    velocity = eps - x0
    for i in (0, 4, 9):
        z_t = schedule.noised(x0, eps, i)
        z_s = schedule.step(velocity, z_t, i)
        assert torch.allclose(z_s, schedule.noised(x0, eps, i + 1), atol=1e-12)
        assert torch.allclose(schedule.inverse_step(velocity, z_s, i, evaluated_at=z_s), z_t, atol=1e-12)
        split_eps, split_x0 = schedule.split(velocity, z_t, i)
        assert torch.allclose(split_eps, eps, atol=1e-12) and torch.allclose(split_x0, x0, atol=1e-12)
        if schedule.sigmas[i] < 1.0:
            a, b = schedule.coefficients(i)
            assert torch.allclose(a * z_t + b * eps, z_s, atol=1e-12)
    with pytest.raises(ScheduleError, match="pure noise"):
        schedule.coefficients(0)  # σ_0 = 1
    # forward process: x_{k-1} = r x_k + s ε' has x_0 weight 1 − σ_{k-1} and noise variance σ_{k-1}²
    k = 6
    zero = torch.zeros(1, dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    r = float(schedule.forward_noised(one, zero, k))
    s = float(schedule.forward_noised(zero, one, k))
    sigma_prev, sigma = schedule.sigmas[k - 1], schedule.sigmas[k]
    assert r * (1 - sigma) == pytest.approx(1 - sigma_prev, abs=1e-12)
    assert (r * sigma) ** 2 + s**2 == pytest.approx(sigma_prev**2, abs=1e-12)
    part = schedule.segment(3, 7)
    assert part.num_steps == 4 and part.sigmas == schedule.sigmas[3:8] and part.timesteps == schedule.timesteps[3:7]


def test_json_round_trip_and_refusals():
    schedule = FlowSchedule.from_scheduler_config(sd3_config(), 6)
    again = FlowSchedule.from_json(schedule.to_json())
    assert again == schedule and again.fingerprint() == schedule.fingerprint()
    assert FlowSchedule.from_scheduler_config(sd3_config(), 7).fingerprint() != schedule.fingerprint()
    with pytest.raises(ScheduleError, match="eta 0"):
        schedule.step(torch.zeros(1), torch.zeros(1), 0, eta=0.5)
    with pytest.raises(ScheduleError, match="strictly"):
        FlowSchedule((1.0, 0.5, 0.5), (1000.0, 500.0))
    with pytest.raises(ScheduleError):
        FlowSchedule.from_scheduler_config(sd3_config(), 0)

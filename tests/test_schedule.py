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

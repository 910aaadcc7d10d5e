"""Our DDIM sampler against diffusers' StableDiffusionPipeline, and the schedule maths."""

import pytest
import torch

from ddim_edit.model import EditModel
from ddim_edit.sampler import Conditioning, sample
from ddim_edit.schedule import Schedule, ddim_inverse_step, ddim_step, make_timesteps, split_prediction
from ddim_edit.testing import tiny_pipeline


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_sampler_matches_diffusers_pipeline(prediction_type, spacing):
    pipe = tiny_pipeline(prediction_type=prediction_type, timestep_spacing=spacing, seed=1)
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    prompt, steps, guidance = "a red cat on a sofa", 10, 7.5
    expected = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, eta=0.0, latents=x_T.clone(),
                    output_type="latent", height=32, width=32).images

    model = EditModel.from_pipeline(pipe, name="tiny")
    schedule = Schedule.from_scheduler_config(pipe.scheduler.config, num_steps=steps)
    assert list(schedule.timesteps) == pipe.scheduler.timesteps.tolist()
    cond = model.encode([prompt])
    uncond = model.encode_negative([""])
    with torch.no_grad():
        ours = sample(model, schedule, x_T, Conditioning(cond, uncond), guidance, progress=False)
    rel = (ours - expected).norm() / expected.norm()
    assert rel <= 1e-5, f"relative error {rel:.2e}"
    assert model.unet_evaluations == 2 * steps


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


def test_eta_positive_is_seeded(tiny_model):
    schedule = Schedule.from_scheduler_config(tiny_model.scheduler_config, num_steps=4)
    cond = tiny_model.encode(["a cat"])
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    runs = [sample(tiny_model, schedule, x_T, Conditioning(cond), 1.0, eta=1.0,
                   generator=torch.Generator().manual_seed(5), progress=False) for _ in range(2)]
    deterministic = sample(tiny_model, schedule, x_T, Conditioning(cond), 1.0, progress=False)
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], deterministic)


@pytest.mark.parametrize("scheduler_name", ["EulerDiscreteScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler"])
def test_any_shipped_scheduler_gives_ddim_with_its_betas(scheduler_name):
    import diffusers

    base = tiny_pipeline().scheduler.config
    other = getattr(diffusers, scheduler_name).from_config(base)
    ours = Schedule.from_scheduler_config(other.config, num_steps=10)
    reference = Schedule.from_scheduler_config(base, num_steps=10)
    assert torch.equal(ours.alphas_cumprod, reference.alphas_cumprod)
    assert ours.fingerprint() == reference.fingerprint() and ours.timesteps == reference.timesteps

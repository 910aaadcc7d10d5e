"""Our DDIM sampler (ddim_edit/sampler.py) against diffusers' StableDiffusionPipeline; eta > 0 is seeded."""

import pytest
import torch

from ddim_edit.model import EditModel
from ddim_edit.sampler import Conditioning, sample
from ddim_edit.schedule import Schedule
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


def test_eta_positive_is_seeded(tiny_model):
    schedule = Schedule.from_scheduler_config(tiny_model.scheduler_config, num_steps=4)
    cond = tiny_model.encode(["a cat"])
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    runs = [sample(tiny_model, schedule, x_T, Conditioning(cond), 1.0, eta=1.0,
                   generator=torch.Generator().manual_seed(5), progress=False) for _ in range(2)]
    deterministic = sample(tiny_model, schedule, x_T, Conditioning(cond), 1.0, progress=False)
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], deterministic)


def test_the_reverse_walk_is_plain_inversion_and_undoes_itself_in_closed_form():
    """reverse=True walks the schedule backwards with the stepper's inverse step; for a model whose output
    does not depend on the latents, sampling forward from the reached x_T lands back on z_0 exactly."""
    from ddim_edit.sampler import SamplerHook

    class Constant:
        def denoise(self, latents, t, cond, uncond, guidance_scale):
            return torch.full_like(latents, 0.3)

    class Seen(SamplerHook):
        def __init__(self):
            self.indices = []

        def after_step(self, step, latents):
            self.indices.append(step.index)
            return latents

    from diffusers import DDIMScheduler

    schedule = Schedule.from_scheduler_config(DDIMScheduler().config, num_steps=5)
    z0 = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = Seen()
    x_T = sample(Constant(), schedule, z0, Conditioning(None, None), 1.0, hooks=[seen], progress=False, reverse=True)
    assert seen.indices == [4, 3, 2, 1, 0]
    back = sample(Constant(), schedule, x_T, Conditioning(None, None), 1.0, progress=False)
    assert torch.allclose(back, z0, atol=1e-12) and not torch.allclose(x_T, z0)

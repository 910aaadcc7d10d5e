"""FlowEdit (``ddim_edit.edits.flowedit``): against a float64 transcription of the paper's algorithm on
tiny models of both kinds of stepper, the identity edit, the option checks."""

from __future__ import annotations

import math

import pytest
import torch

from ddim_edit.edits.flowedit import FlowEditOptions, branch_conditioning, flowedit
from ddim_edit.errors import PromptError
from ddim_edit.model import EditModel
from flow_helpers import SIDE, flow_model

SOURCE, TARGET = "a red circle on white background", "a blue square on white background"


def _x_src(model: EditModel, seed: int = 3) -> torch.Tensor:
    side = SIDE // model.vae_scale_factor
    return torch.randn(1, model.latent_channels, side, side, generator=torch.Generator().manual_seed(seed))


def _ours(model, schedule, x_src, options, seed=5, source=SOURCE, target=TARGET):
    branches = [branch_conditioning(model, prompt) for prompt in (source, target)]
    return flowedit(model, schedule, x_src, *branches, options, torch.Generator().manual_seed(seed), progress=False)


def _paper(velocity, times, x_src, n_max, n_min, n_avg, seed, step_time=None):
    """Algorithm 1 of Kulikov et al. (FlowEdit), in float64: ``times`` t_0 > … > t_N (t_N the clean
    end), ``velocity(Z, i, branch)`` V at step i; the last ``n_min`` steps sample the target plainly."""
    generator = torch.Generator().manual_seed(seed)
    noise = lambda: torch.randn(x_src.shape, generator=generator, dtype=torch.float32).double()  # noqa: E731
    x_src = x_src.double()
    n = len(times) - 1
    z_fe = x_src.clone()
    for i in range(n - n_max, n - n_min):
        t_i, t_next = times[i], times[i + 1]
        v_delta = torch.zeros_like(x_src)
        for _ in range(n_avg):
            z_src = (1 - t_i) * x_src + t_i * noise() if step_time is None else x_src + t_i * noise()
            z_tar = z_fe + z_src - x_src
            v_delta += (velocity(z_tar, i, "target") - velocity(z_src, i, "source")) / n_avg
        z_fe = z_fe + (t_next - t_i) * v_delta
    if n_min == 0:
        return z_fe
    t_i = times[n - n_min]
    z_src = (1 - t_i) * x_src + t_i * noise() if step_time is None else x_src + t_i * noise()
    z = z_fe + z_src - x_src
    for i in range(n - n_min, n):
        z = z + (times[i + 1] - times[i]) * velocity(z, i, "target")
    return z


def test_flowedit_is_the_papers_algorithm_on_a_flow_model():
    pipe, model = flow_model("sd3")
    steps, n_max, n_min, n_avg = 8, 6, 2, 2
    options = FlowEditOptions(n_max=n_max, n_min=n_min, n_avg=n_avg, source_guidance=3.5, target_guidance=9.0)
    x_src = _x_src(model)
    schedule = model.make_schedule(steps, None, None, (SIDE, SIDE))
    ours = _ours(model, schedule, x_src, options).latents

    pipe.scheduler.set_timesteps(steps)  # the pipeline's own σ (SD3: shift 3, not dynamic)
    sigmas = [float(s) for s in pipe.scheduler.sigmas]
    timesteps = pipe.scheduler.timesteps
    embeds = {}
    with torch.no_grad():
        for branch, prompt in (("source", SOURCE), ("target", TARGET)):
            cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(prompt, None, None,
                                                                     do_classifier_free_guidance=True)
            embeds[branch] = (torch.cat([uncond, cond]), torch.cat([uncond_pooled, pooled]))
    guidance = {"source": 3.5, "target": 9.0}

    def velocity(z, i, branch):
        hidden, pooled = embeds[branch]
        with torch.no_grad():
            v = pipe.transformer(hidden_states=torch.cat([z, z]).float(), timestep=timesteps[i].expand(2),
                                 encoder_hidden_states=hidden, pooled_projections=pooled).sample.double()
        v_uncond, v_cond = v.chunk(2)
        return v_uncond + guidance[branch] * (v_cond - v_uncond)

    paper = _paper(velocity, sigmas, x_src, n_max, n_min, n_avg, seed=5)
    assert (paper - x_src).abs().max() > 0.05  # the edit moved the latents
    torch.testing.assert_close(ours.double(), paper, atol=1e-5, rtol=1e-5)


def test_flowedit_is_the_papers_algorithm_on_the_ddim_ode(tiny_pipe, tiny_model):
    """DDIM written as a flow: X = x/√ᾱ, σ = √(1 − ᾱ)/√ᾱ, dX/dσ = ε; the model sees √ᾱ·X."""
    pipe, model = tiny_pipe, tiny_model
    steps, n_max = 10, 7
    options = FlowEditOptions(n_max=n_max, source_guidance=2.0, target_guidance=6.0)
    x_src = _x_src(model)
    schedule = model.make_schedule(steps, None, None, None)
    ours = _ours(model, schedule, x_src, options).latents

    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps)
    alphas = [float(scheduler.alphas_cumprod[int(t)]) for t in scheduler.timesteps]
    alphas.append(float(scheduler.final_alpha_cumprod))
    sigmas = [math.sqrt(1 - a) / math.sqrt(a) for a in alphas]
    embeds = {}
    with torch.no_grad():
        for branch, prompt in (("source", SOURCE), ("target", TARGET)):
            cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt="")
            embeds[branch] = torch.cat([uncond, cond])
    guidance = {"source": 2.0, "target": 6.0}

    def velocity(z, i, branch):  # ε at the model's input √ᾱ·X
        x = math.sqrt(alphas[i]) * z
        with torch.no_grad():
            eps = pipe.unet(torch.cat([x, x]).float(), scheduler.timesteps[i],
                            encoder_hidden_states=embeds[branch]).sample.double()
        eps_uncond, eps_cond = eps.chunk(2)
        return eps_uncond + guidance[branch] * (eps_cond - eps_uncond)

    paper = _paper(velocity, sigmas, x_src, n_max, 0, 1, seed=5, step_time="variance-exploding")
    assert (paper - x_src).abs().max() > 0.05
    torch.testing.assert_close(ours.double(), paper, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["sd3", "flux", "flux2"])
def test_target_equal_to_source_returns_the_source_latents_on_flow_models(kind):
    _, model = flow_model(kind)
    x_src = _x_src(model)
    schedule = model.make_schedule(6, None, None, (SIDE, SIDE))
    result = _ours(model, schedule, x_src, FlowEditOptions(source_guidance=4.0, target_guidance=4.0), target=SOURCE)
    assert torch.equal(result.latents.float(), x_src)
    per_step = 2 * (2 if model.classifier_free else 1)
    assert result.unet_evaluations == per_step * 4  # 4 of 6 steps (the paper's 33 of 50, rounded)


def test_target_equal_to_source_returns_the_vae_round_trip_on_the_toy_model():
    from ddim_edit.images import to_tensor
    from ddim_edit.model import load_model
    from ddim_edit.toy import render, sample_scenes
    from ddim_edit.toy.world import caption
    from ddim_edit.workflow import decode

    model = load_model("toy")
    scene = sample_scenes(99, 1)[0]
    image = render(scene)
    x_src = model.encode_image(to_tensor(image))
    schedule = model.make_schedule(20, None, None, None)
    result = _ours(model, schedule, x_src, FlowEditOptions(source_guidance=7.5, target_guidance=7.5),
                   source=caption(scene), target=caption(scene))
    assert (decode(model, result.latents) == decode(model, x_src)).all()


def test_the_default_window_is_the_papers_share_and_bad_windows_are_refused(tiny_model):
    assert FlowEditOptions().steps_edited(50) == (17, 50)
    assert FlowEditOptions().steps_edited(28) == (10, 28)
    assert FlowEditOptions(n_max=24, n_min=4).steps_edited(28) == (4, 24)
    with pytest.raises(PromptError, match="more than the 20 steps"):
        FlowEditOptions(n_max=21).steps_edited(20)
    with pytest.raises(PromptError, match="below n_max"):
        FlowEditOptions(n_max=5, n_min=5).steps_edited(20)
    assert FlowEditOptions().guidance(tiny_model) == (3.5, 13.5)
    assert FlowEditOptions(target_guidance=9).guidance(tiny_model) == (3.5, 9)
    _, flux = flow_model("flux")
    assert FlowEditOptions().guidance(flux) == (1.5, 5.5)  # embedded guidance: the paper's FLUX values

"""Style transfer (ddim_edit/edits/style.py, StyleID through the one sampler): identities, the
processor's maths, memory."""

import functools
import math
from types import SimpleNamespace

import pytest
import torch

from ddim_edit.attention import attention_probabilities
from ddim_edit.edits.style import (
    adain,
    CONTENT,
    decoder_self_attention,
    encoder_self_attention,
    InjectionSwitch,
    OUTPUT,
    resolve_layers,
    resolve_structure_layers,
    structure_spec,
    StructureAttnProcessor,
    STYLE,
    style_images,
    style_transfer,
    StyleAttnProcessor,
    styleid_layers,
    StyleOptionError,
    StyleOptions,
)
from ddim_edit.errors import TrajectoryError
from ddim_edit.inversion import InversionOptions
from ddim_edit.replay import reconstruct
from ddim_edit.workflow import invert_image, make_schedule
from tests.style_helpers import _picture, STEPS
from tests.style_helpers import one_thread  # noqa: F401 (pytest fixtures)


def _invert(model, pixels, method="exact", guidance=1.0, steps=STEPS, prompt=""):
    from ddim_edit.bench.harness import prepared

    schedule = make_schedule(model, steps)
    return invert_image(model, prepared(pixels, "test"), prompt, schedule,
                        InversionOptions(method=method, guidance_scale=guidance, null_text_steps=2),
                        progress=False)


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _reconstructs(result, recon: torch.Tensor) -> None:
    """The output branch equals the content branch of its batch, and that the batch-1 reconstruction.

    Batches of different sizes and separate SDPA calls round differently in the float32 UNet, and
    guidance and the exact corrections amplify it (measured up to ~3e-4 relative on the tiny model
    at 5 steps, with or without our processors); a real edit changes the output by > 5e-2.
    """
    assert _relative(result.output, result.content) <= 1e-3
    assert _relative(result.output, recon) <= 1e-3


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------------- identities
@pytest.mark.parametrize("method,guidance", [("exact", 1.0), ("exact", 3.0), ("null-text", 3.0)])
def test_style_equal_to_content_gives_the_content_reconstruction(tiny_model, method, guidance):
    """K/V from an identical style branch and γ-blending identical queries are no-ops (T = 1)."""
    traj = _invert(tiny_model, _picture(0), method, guidance, prompt="a red circle")
    recon = traj.latents[-1:]  # the content branch is the recorded latents, whatever the method
    options = StyleOptions(gamma=0.75, temperature=1.0, adain=False, layers=("all",))
    result = style_transfer(tiny_model, traj, traj, options, progress=False)
    assert result.injected_steps == list(range(STEPS)) and result.layers
    _reconstructs(result, recon)
    # AdaIN(x, x) = x up to rounding: the identity holds with AdaIN on as well.
    with_adain = style_transfer(tiny_model, traj, traj, StyleOptions(temperature=1.0, layers=("all",)), progress=False)
    _reconstructs(with_adain, recon)


def test_temperature_is_applied(tiny_model):
    """T ≠ 1 sharpens the injected attention on purpose: with style = content it no longer reconstructs."""
    traj = _invert(tiny_model, _picture(0))
    recon = reconstruct(tiny_model, traj, progress=False)
    sharp = style_transfer(tiny_model, traj, traj, StyleOptions(temperature=1.5, adain=False, layers=("all",)),
                           progress=False)
    assert _relative(sharp.output, recon) > 0.01


def test_gamma_one_without_injection_gives_the_content_reconstruction(tiny_model):
    content, style = _invert(tiny_model, _picture(0)), _invert(tiny_model, _picture(7))
    recon, recon_style = content.latents[-1:], style.latents[-1:]
    options = StyleOptions(gamma=1.0, temperature=1.0, adain=False, inject_key_value=False, layers=("all",))
    result = style_transfer(tiny_model, content, style, options, progress=False)
    _reconstructs(result, recon)
    # No injected step at all (empty window) is the same identity, whatever γ and T.
    idle = style_transfer(tiny_model, content, style, StyleOptions(gamma=0.3, injection_start=1.0, adain=False),
                          progress=False)
    assert idle.injected_steps == []
    _reconstructs(idle, recon)
    # The default edit changes the output, while both source branches still replay exactly.
    edited = style_transfer(tiny_model, content, style, StyleOptions(layers=("all",)), progress=False)
    assert _relative(edited.output, recon) > 0.05
    for branch, alone in ((edited.content, recon), (edited.style, recon_style)):
        assert _relative(branch, alone) <= 1e-3
    assert edited.unet_evaluations == 3 * STEPS


def test_injection_window_and_output_corrections(tiny_model):
    content, style = _invert(tiny_model, _picture(0)), _invert(tiny_model, _picture(7))
    late = style_transfer(tiny_model, content, style, StyleOptions(injection_start=0.4, injection_end=0.8),
                          progress=False)
    assert late.injected_steps == [2, 3]
    # Without the content's corrections the unedited output drifts by the DDIM inversion error.
    recon = reconstruct(tiny_model, content, progress=False)
    bare = style_transfer(tiny_model, content, style, StyleOptions(injection_start=1.0, adain=False,
                                                                   output_corrections="none"), progress=False)
    assert _relative(bare.output, recon) > 0.01


# ------------------------------------------------------------------------------- processor maths
@pytest.mark.parametrize("gamma,temperature,inject", [(0.75, 1.5, True), (0.0, 1.0, True), (0.4, 0.7, False)])
def test_processor_matches_materialised_reference(tiny_model, gamma, temperature, inject):
    layer = decoder_self_attention(tiny_model)[0]
    switch = InjectionSwitch(active=True)
    processor = StyleAttnProcessor(layer, switch, gamma, temperature, inject)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 2, 16, 8, generator=generator) for _ in range(3))  # 2 groups (CFG) × 3 branches
    ours = processor.attend(q, k, v, None, None)
    expected = []
    for group in range(2):
        c, s, o = 3 * group + CONTENT, 3 * group + STYLE, 3 * group + OUTPUT
        for branch in (c, s):
            expected.append(attention_probabilities(q[branch], k[branch]) @ v[branch])
        q_cs = gamma * q[c] + (1 - gamma) * q[o]
        donor = s if inject else o
        probabilities = attention_probabilities(q_cs, k[donor], scale=temperature / math.sqrt(8))
        expected.append(probabilities @ v[donor])
    expected = torch.stack(expected)
    assert _close(ours, expected) <= 1e-5
    switch.active = False
    plain = torch.stack([attention_probabilities(q[b], k[b]) @ v[b] for b in range(6)])
    assert _close(processor.attend(q, k, v, None, None), plain) <= 1e-5


def test_structure_processor_matches_materialised_reference(tiny_model):
    """The output attends with the content's map over its own values; content and style attend as usual."""
    layer = encoder_self_attention(tiny_model)[0]
    switch = InjectionSwitch(active=True)
    processor = StructureAttnProcessor(layer, switch)
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(6, 2, 16, 8, generator=generator) for _ in range(3))  # 2 groups (CFG) × 3 branches
    expected = []
    for group in range(2):
        c, s, o = 3 * group + CONTENT, 3 * group + STYLE, 3 * group + OUTPUT
        for branch in (c, s):
            expected.append(attention_probabilities(q[branch], k[branch]) @ v[branch])
        expected.append(attention_probabilities(q[c], k[c]) @ v[o])
    assert _close(processor.attend(q, k, v, None, None), torch.stack(expected)) <= 1e-5
    # the output's own queries and keys do not matter; its values do
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[OUTPUT], k2[OUTPUT] = 0, 5
    assert _close(processor.attend(q2, k2, v, None, None), torch.stack(expected)) <= 1e-5
    v2[OUTPUT] += 1
    assert _close(processor.attend(q, k, v2, None, None)[OUTPUT], expected[OUTPUT] + 1) <= 1e-5
    switch.active = False
    plain = torch.stack([attention_probabilities(q[b], k[b]) @ v[b] for b in range(6)])
    assert _close(processor.attend(q, k, v, None, None), plain) <= 1e-5


def test_structure_layers_selection(tiny_model):
    model = tiny_model
    style = resolve_layers(model, None)
    encoder = [layer.name for layer in encoder_self_attention(model)]
    assert encoder and all(name.startswith("down_blocks.") and ".attn1." in name for name in encoder)
    assert resolve_structure_layers(model, None, style) == encoder
    assert resolve_structure_layers(model, (), style) == []
    everything = resolve_structure_layers(model, ("all",), style)
    assert set(encoder) < set(everything) and not set(everything) & set(style)
    assert resolve_structure_layers(model, (encoder[0],), style) == [encoder[0]]
    with pytest.raises(StyleOptionError, match="no self-attention layer outside the style layers"):
        resolve_structure_layers(model, (style[0],), style)  # a style layer cannot also take the content's maps
    with pytest.raises(StyleOptionError, match="'nope'"):
        resolve_structure_layers(model, ("nope",), style)


@pytest.mark.parametrize("text, spec", [(None, None), ("encoder", None), ("", None), ("none", ()), (["none"], ()),
                                        ("down_blocks.0, mid_block", ("down_blocks.0", "mid_block")),
                                        (["all"], ("all",))])
def test_structure_spec(text, spec):
    assert structure_spec(text) == spec


def test_structure_layers_keep_the_identity_and_act(tiny_model):
    """γ = 1, T = 1 and no key/value injection reproduce the content with the structure layers on; they change an edit."""
    content, style = _invert(tiny_model, _picture(0)), _invert(tiny_model, _picture(7))
    recon = reconstruct(tiny_model, content, progress=False)
    identity = style_transfer(tiny_model, content, style,
                              StyleOptions(gamma=1.0, temperature=1.0, adain=False, inject_key_value=False),
                              progress=False)
    assert identity.structure_layers and _close(identity.output, recon) <= 1e-3
    with_maps = style_transfer(tiny_model, content, style, progress=False)
    without = style_transfer(tiny_model, content, style, StyleOptions(structure_layers=()), progress=False)
    assert without.structure_layers == [] and _close(with_maps.output, without.output) > 1e-3


def test_adain_matches_style_statistics():
    generator = torch.Generator().manual_seed(0)
    content = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64)
    style = 3 * torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64) + 2
    mixed = adain(content, style)
    assert torch.allclose(mixed.mean((-2, -1)), style.mean((-2, -1)))
    assert torch.allclose(mixed.std((-2, -1)), style.std((-2, -1)))
    assert torch.allclose(adain(content, content), content)


# ------------------------------------------------------------------------------- layers, options, errors
def test_layer_selection(tiny_model):
    model = tiny_model
    names = [layer.name for layer in decoder_self_attention(model)]
    assert names and all(".attn1." in n and n.startswith("up_blocks.") for n in names)
    assert styleid_layers(model) == names  # the tiny decoder has a single attention block
    assert resolve_layers(model, ("all",)) == names
    assert resolve_layers(model, ("up_blocks.1",)) == names
    assert resolve_layers(model, (names[-1],)) == [names[-1]]
    with pytest.raises(StyleOptionError, match="no decoder self-attention"):
        resolve_layers(model, ("down_blocks.0",))


def test_styleid_default_on_sd_layout():
    """On SD 1.x's decoder (attention in up_blocks 1–3) StyleID injects into up_blocks 2 and 3."""
    from diffusers import UNet2DConditionModel

    from ddim_edit.attention import attention_sites

    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(8, 8, 8, 8), layers_per_block=1, cross_attention_dim=8,
        attention_head_dim=2, norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    chosen = styleid_layers(SimpleNamespace(attention_sites=functools.partial(attention_sites, unet)))
    assert len(chosen) == 4 and {n.split(".")[1] for n in chosen} == {"2", "3"}


@pytest.mark.parametrize("bad", [dict(gamma=1.5), dict(gamma=-0.1), dict(temperature=0.0), dict(temperature=-1.0),
                                 dict(injection_start=0.8, injection_end=0.2), dict(output_corrections="style")])
def test_bad_options(bad):
    with pytest.raises(StyleOptionError):
        StyleOptions(**bad)


def test_mismatched_trajectories(tiny_model):
    content = _invert(tiny_model, _picture(0))
    other_steps = _invert(tiny_model, _picture(7), steps=STEPS + 1)
    with pytest.raises(TrajectoryError, match="timesteps"):
        style_transfer(tiny_model, content, other_steps, progress=False)
    wide = _invert(tiny_model, _picture(7, (64, 32)))
    with pytest.raises(TrajectoryError, match="differ in size"):
        style_transfer(tiny_model, content, wide, progress=False)
    # any method, caption and guidance: only the recorded latents are read
    guided = _invert(tiny_model, _picture(7), guidance=3.0, prompt="a blue square")
    result = style_transfer(tiny_model, content, guided, progress=False)
    assert result.settings["guidance"] == 1.0 and result.settings["prompt"] == ""


# ------------------------------------------------------------------------------- memory
def _peak_allocated(run) -> int:
    """Peak bytes allocated by torch on the CPU while ``run()`` executes (allocations minus frees, in order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def test_peak_memory_does_not_grow_with_steps(tiny_model):
    """StyleID stores Q/K/V per layer and step; here nothing is kept between steps."""
    peaks = {}
    for steps in (5, 20):
        content = _invert(tiny_model, _picture(0), steps=steps)
        style = _invert(tiny_model, _picture(7), steps=steps)
        peaks[steps] = _peak_allocated(lambda: style_transfer(tiny_model, content, style, progress=False))
    unet, latent_side = tiny_model.denoiser, tiny_model.denoiser.config.sample_size
    levels = len(unet.config.up_block_types) - 1
    per_step_kv = 0  # bytes StyleID keeps per step: q, k, v (float32) of each injected layer, two images
    for name in styleid_layers(tiny_model):
        attn = unet.get_submodule(name.removesuffix(".processor"))
        tokens = (latent_side // 2 ** (levels - int(name.split(".")[1]))) ** 2
        per_step_kv += 2 * 3 * 4 * tokens * attn.to_q.out_features
    assert peaks[5] > 0
    # Storing features as StyleID does would add 15 steps × per_step_kv; we allow a tenth of one step.
    assert peaks[20] - peaks[5] <= per_step_kv / 10, peaks


# ------------------------------------------------------------------------------- images and CLI
def test_style_images_resizes_the_style_to_the_content(tiny_model):
    content, style = _picture(0, (48, 24)), _picture(7, (20, 36))
    outcome = style_images(tiny_model, content, style, make_schedule(tiny_model, STEPS), progress=False)
    assert outcome.output.shape == (16, 32, 3)  # content fitted: longer side 32, multiple of 8
    assert outcome.style_source.shape == outcome.content_source.shape == (16, 32, 3)
    assert outcome.inversion_evaluations == 2 * STEPS  # inversion only: the edit makes its own corrections

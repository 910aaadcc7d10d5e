"""Prompt swap: SDPA edits against materialised probabilities, clean processors, exact identity edit, CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddim_edit.attention import attention_probabilities, installed_processors
from ddim_edit.edits.p2p_control import (
    AttentionController,
    BranchLayout,
    TokenMap,
    align_tokens,
    cross_attention_edit,
    make_processors,
    refine_map,
    self_attention_edit,
    token_positions,
)
from ddim_edit.edits.prompt_swap import SwapOptions, build_spec, swap
from ddim_edit.errors import PromptError, TrajectoryError
from ddim_edit.inversion import InversionOptions, invert
from ddim_edit.replay import reconstruct
from ddim_edit.workflow import make_schedule
from tests.cli_helpers import one_line_error, run

SOURCE = "a red circle on a white background"
TARGET = "a blue circle on a white background"
L = 77


def _qkv(seed, batch=1, heads=2, queries=16, keys=L, dim=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dim, generator=g, dtype=torch.float64) for n in (queries, keys, keys)]


def _reference_cross(p_src, p_tgt, v_tgt, tokens: TokenMap, alpha, reweight):
    """Prompt-to-prompt's materialised recipe: refine/replace, then reweight, then α-mix per token."""
    moved = torch.einsum("bhqi,ij->bhqj", p_src, tokens.matrix.to(p_src))  # P_src[..., mapper]
    edited = moved * tokens.mapped.to(p_src) + p_tgt * (1 - tokens.mapped.to(p_src))
    edited = edited * reweight.to(p_src)
    final = edited * alpha.to(p_src) + p_tgt * (1 - alpha.to(p_src))
    return final @ v_tgt


@pytest.mark.parametrize("kind", ["replace", "refine", "reweight", "per_word"])
def test_cross_attention_sdpa_matches_materialised_reference(tiny_model, kind):
    target = {"refine": "a blue striped circle on a white background"}.get(kind, TARGET)
    cross_steps = {"per_word": {"default": 0.8, "blue": 0.3}}.get(kind, 0.8)
    options = SwapOptions(mode="refine" if kind == "refine" else "replace", cross_steps=cross_steps,
                          reweight={"reweight": {"blue": 2.5, "circle": 0.5}}.get(kind, {}))
    spec = build_spec(tiny_model, SOURCE, target, options, L)
    q_src, k_src, _ = _qkv(1)
    q_tgt, k_tgt, v_tgt = _qkv(2)
    scale = 8 ** -0.5
    p_src, p_tgt = attention_probabilities(q_src, k_src, scale), attention_probabilities(q_tgt, k_tgt, scale)
    n = 10
    for index in (0, 5, 9):
        edit = spec.cross_edit(index, n)
        alpha = (index < torch.floor(spec.cross_steps.double() * n + 1e-9)).double()
        if edit is None:
            assert not alpha.any()
            continue
        ours = cross_attention_edit(q_src, k_src, q_tgt, k_tgt, v_tgt, edit, scale)
        expected = _reference_cross(p_src, p_tgt, v_tgt, spec.tokens, alpha, spec.reweight)
        assert (ours - expected).abs().max() <= 1e-5
    if kind == "per_word":  # at 0.5, "blue" keeps the target's own attention: the edit is not a pure copy
        assert spec.cross_edit(5, n).keeps_target and not spec.cross_edit(1, n).keeps_target


def test_self_attention_sdpa_matches_materialised_reference():
    q_src, k_src, _ = _qkv(3, keys=16)
    _, _, v_tgt = _qkv(4, keys=16)
    expected = attention_probabilities(q_src, k_src) @ v_tgt
    assert (self_attention_edit(q_src, k_src, v_tgt, 8 ** -0.5) - expected).abs().max() <= 1e-5


def test_token_alignment_and_positions(tiny_model):
    assert align_tokens(list("abc"), list("abxc")) == [0, 1, None, 2]
    assert align_tokens(list("abc"), list("ac")) == [0, 2]
    target = "a blue striped circle on a white background"
    tokens = refine_map(tiny_model, SOURCE, target, L)
    # the new words keep the target's attention; "circle" moves from its source to its target position
    for word in ("blue", "striped"):
        assert all(tokens.mapped[p] == 0 for p in token_positions(tiny_model, target, word))
    src, tgt = token_positions(tiny_model, SOURCE, "circle")[0], token_positions(tiny_model, target, "circle")[0]
    assert tgt > src and tokens.matrix[src, tgt] == 1 and tokens.matrix[1, 1] == 1 and tokens.matrix[0, 0] == 1
    assert tokens.matrix[:, -1].sum() == 1  # padding still maps somewhere
    assert token_positions(tiny_model, SOURCE, "circle") == [3]
    assert token_positions(tiny_model, SOURCE, "a") == [1, 5]
    assert token_positions(tiny_model, SOURCE, "dog") == []


def _unet_output(unet):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 8, 8)
    text = torch.randn(3, 77, 32)
    with torch.no_grad():
        return unet(x, torch.tensor([500] * 3), encoder_hidden_states=text).sample


def test_processors_install_and_remove_bitwise(tiny_model):
    unet = tiny_model.unet
    before = _unet_output(unet)
    spec = build_spec(tiny_model, SOURCE, TARGET, SwapOptions(), L)
    controller = AttentionController(spec, {"target": [2]}, blend_side=8, keep_maps=True)
    with installed_processors(unet, make_processors(unet, controller)):
        idle = _unet_output(unet)  # no layout: plain attention
        controller.begin_step(0, 4)
        controller.layout = BranchLayout([1], [2], {"source": 1, "target": 2})
        active = _unet_output(unet)
        controller.layout = None
    after = _unet_output(unet)
    assert torch.equal(before, after)
    assert torch.allclose(before, idle, atol=1e-6)
    assert torch.allclose(before[:2], active[:2], atol=1e-6)  # rows 0, 1 are not targets
    assert not torch.allclose(before[2], active[2], atol=1e-3)  # row 2 borrows row 1's attention
    assert controller.word_maps()["target"].shape == (8, 8) and controller.accumulated


@pytest.fixture(scope="module")
def trajectories(tiny_pipe):
    from ddim_edit.model import EditModel

    model = EditModel.from_pipeline(tiny_pipe, name="tiny")
    schedule = make_schedule(model, 4)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    return model, {method: invert(model, schedule, z0, SOURCE, InversionOptions(method=method), progress=False)
                   for method in ("exact", "ddim")}


def test_same_prompt_reproduces_the_reconstruction_exactly(trajectories):
    model, trajs = trajectories
    traj = trajs["exact"]
    reconstruction = reconstruct(model, traj, progress=False)
    result = swap(model, traj, SOURCE, SwapOptions(blend_words=("circle",), blend_latents=True, correct_inside_mask=True),
                  progress=False)
    assert (result.target_latents - reconstruction).abs().max() <= 1e-6
    assert torch.equal(result.source_latents[0], traj.z_0.to(result.source_latents))  # the recorded z_0
    # and the exact reconstruction is the inverted image's latent
    assert (reconstruction[0] - traj.z_0.to(reconstruction)).abs().max() <= 1e-6


def test_unet_evaluations_per_edit(trajectories):
    model, trajs = trajectories
    n = trajs["exact"].num_steps
    blended = swap(model, trajs["exact"], TARGET, SwapOptions(blend_words=("red", "blue")), progress=False)
    assert blended.unet_evaluations == 3 * n  # target (uncond + cond) + source cond, every step
    # no blend: the source runs only while injecting (cross 0.5, self 0.3 → steps 0-1 of 4)
    plain = swap(model, trajs["exact"], TARGET, SwapOptions(cross_steps=0.5, self_steps=0.3, blend_words=()),
                 progress=False)
    assert plain.unet_evaluations == 2 * n + 2
    full = swap(model, trajs["exact"], TARGET, SwapOptions(reuse_source=False), progress=False)
    assert full.unet_evaluations == 4 * n
    assert (full.target_latents - plain.target_latents).abs().max() > 0  # different settings, different edits
    same = swap(model, trajs["exact"], TARGET, SwapOptions(cross_steps=0.5, self_steps=0.3, reuse_source=False,
                                                           blend_words=()), progress=False)
    assert (same.target_latents - plain.target_latents).abs().max() <= 1e-4  # reuse changes cost, not result
    assert swap(model, trajs["ddim"], TARGET, progress=False).unet_evaluations == 4 * n


def test_local_blend_keeps_the_source_outside_the_mask(trajectories):
    model, trajs = trajectories
    result = swap(model, trajs["exact"], TARGET, SwapOptions(blend_words=("blue",), blend_threshold=0.8,
                                                             blend_pool_radius=0, blend_latents=True), progress=False)
    mask = result.blend_mask
    assert mask is not None and 0 < mask.sum() < mask.numel()
    outside = ~mask
    difference = (result.target_latents - result.source_latents)[0].abs().amax(0)
    assert difference[outside].max() == 0 and difference[mask].max() > 0


@pytest.mark.parametrize("case", ["replace_tokens", "blend", "reweight", "source", "fraction", "empty"])
def test_bad_input_raises_clear_errors(trajectories, case):
    model, trajs = trajectories
    target, options, source, error, fragment = TARGET, SwapOptions(), None, PromptError, ""
    if case == "replace_tokens":
        target, fragment = "a blue striped circle on a white background", "the target has 8 words and the source 7 .'red' → 'blue striped'.; use mode refine"
    elif case == "blend":
        options, fragment = SwapOptions(blend_words=("dog",)), "blend word 'dog'"
    elif case == "reweight":
        options, fragment = SwapOptions(reweight={"dog": 2.0}), "reweight word 'dog'"
    elif case == "source":
        source, error, fragment = "a green square", TrajectoryError, "differs"
    elif case == "fraction":
        options, fragment = SwapOptions(self_steps=1.5), "^self_steps must be"  # library words, not CLI flags
    elif case == "empty":
        target, fragment = "  ", "target prompt is empty"
    with pytest.raises(error, match=fragment):
        swap(model, trajs["exact"], target, options, source_prompt=source, progress=False)


# ----------------------------------------------------------------------------- CLI


@pytest.fixture()
def photo(tmp_path):
    image = np.full((32, 32, 3), 240, np.uint8)
    image[8:24, 8:24] = (200, 40, 40)
    path = tmp_path / "red.png"
    Image.fromarray(image).save(path)
    return path


def test_cli_image_then_trajectory(tmp_path, photo, tiny_model_dir):
    out, traj, maps = tmp_path / "blue.png", tmp_path / "red.traj.safetensors", tmp_path / "maps.png"
    result = run("swap", photo, "-s", SOURCE, "-t", TARGET, "--blend", "circle", "--reweight", "blue=2",
                 "--cross-steps", "0.6", "--cross-steps", "blue=0.3", "--model", tiny_model_dir, "--steps", "4",
                 "-o", out, "--save-trajectory", traj, "--save-attention", maps, "--grid", "--format", "json", "-q")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["unet_evaluations"] == 3 * 4 and info["inversion_unet_evaluations"] == 4 + 2 * 4
    assert out.exists() and traj.exists() and maps.exists()
    assert Image.open(out).size == Image.open(photo).size  # the edit alone …
    assert Image.open(tmp_path / "blue.grid.png").size[0] > 3 * 32  # … and source | reconstruction | edit beside it
    assert Image.open(maps).size[1] > 2 * 32  # a row per branch

    again = run("swap", traj, "-t", "a red square on a white background", "--mode", "refine",
                "--model", tiny_model_dir, "-o", tmp_path / "square.png", "--format", "json", "-q")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["inversion_unet_evaluations"] == 0


@pytest.fixture(scope="module")
def saved_trajectory(tmp_path_factory, trajectories, tiny_model_dir):
    model, _ = trajectories
    schedule = make_schedule(model, 2)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    traj = invert(model, schedule, z0, SOURCE, InversionOptions(method="exact"), progress=False)
    traj.metadata["model"] = str(tiny_model_dir)
    return traj.save(tmp_path_factory.mktemp("traj") / "red.traj.safetensors")


@pytest.mark.parametrize("case", ["source_mismatch", "token_count", "blend_word", "reweight_word", "reweight_syntax",
                                  "exists", "missing"])
def test_cli_bad_input(tmp_path, saved_trajectory, tiny_model_dir, case):
    traj = saved_trajectory
    args, fragments = ["-t", TARGET], []
    source = traj
    if case == "source_mismatch":
        args, fragments = ["-s", "a green square", "-t", TARGET], ["differs", "trajectory"]
    elif case == "token_count":
        args, fragments = ["-t", "a blue striped circle on a white background"], ["8 words and the source 7 ('red' → 'blue striped')", "--mode refine"]
    elif case == "blend_word":
        args, fragments = ["-t", TARGET, "--blend", "dog"], ["blend word 'dog'"]
    elif case == "reweight_word":
        args, fragments = ["-t", TARGET, "--reweight", "dog=2"], ["reweight word 'dog'"]
    elif case == "reweight_syntax":
        args, fragments = ["-t", TARGET, "--reweight", "blue"], ["WORD=NUMBER"]
    elif case == "exists":
        (tmp_path / "out.png").write_bytes(b"x")
        fragments = ["already exists", "--force"]
    elif case == "missing":
        source, fragments = tmp_path / "nope.png", ["does not exist"]
    result = run("swap", source, *args, "--model", tiny_model_dir, "-o", tmp_path / "out.png", "-q")
    one_line_error(result, *fragments)


def test_each_branch_is_decoded_once_per_result(trajectories, monkeypatch):
    from ddim_edit.edits.prompt_swap import decoded, edited_image

    model, trajs = trajectories
    result = swap(model, trajs["exact"], TARGET, SwapOptions(blend_words=("circle",)), progress=False)
    calls = []
    real = model.decode_latents
    monkeypatch.setattr(model, "decode_latents", lambda latents: calls.append(1) or real(latents))
    first = edited_image(model, result)  # decodes the target and, for the blend, the source
    assert decoded(model, result, "target") is decoded(model, result, "target")
    assert np.array_equal(edited_image(model, result), first) and len(calls) == 2

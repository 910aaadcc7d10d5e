"""Prompt-to-prompt attention control (ddim_edit/edits/p2p_control.py): SDPA edits against materialised
probabilities, token alignment, injected steps, processors installed and removed bitwise."""

import pytest
import torch

from ddim_edit.attention import attention_probabilities
from ddim_edit.edits.p2p_control import (
    align_tokens,
    AttentionController,
    BranchLayout,
    cross_attention_edit,
    injected_steps,
    make_processors,
    refine_map,
    self_attention_edit,
    token_positions,
    TokenMap,
)
from ddim_edit.edits.prompt_swap import build_spec, SwapOptions
from tests.swap_helpers import SOURCE, TARGET


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
    unet = tiny_model.denoiser
    before = _unet_output(unet)
    spec = build_spec(tiny_model, SOURCE, TARGET, SwapOptions(), L)
    controller = AttentionController(spec, {"target": [2]}, blend_side=8, keep_maps=True)
    with tiny_model.installed_processors(make_processors(tiny_model, controller)):
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


@pytest.mark.parametrize("fraction, n, expected", [(0.4, 50, 20), (0.35, 10, 3), (0.6, 4, 2), (1.0, 7, 7), (0.0, 9, 0)])
def test_injection_covers_int_f_times_n_steps_as_prompt_to_prompt(tiny_model, fraction, n, expected):
    assert injected_steps(fraction, n) == expected
    spec = build_spec(tiny_model, SOURCE, TARGET, SwapOptions(cross_steps=fraction, self_steps=fraction), 77)
    injected = [i for i in range(n) if spec.cross_edit(i, n) is not None]
    assert injected == list(range(expected))
    assert [i for i in range(n) if spec.self_injected(i, n)] == list(range(expected))


@pytest.mark.parametrize("first", [0, 1])
def test_word_positions_follow_the_models_first_word_position(first):
    """A text encoder without a start token (T5: words from position 0) and CLIP's (position 1)."""
    from types import SimpleNamespace

    from ddim_edit.edits.p2p_control import refine_map, token_positions

    model = SimpleNamespace(FIRST_WORD_POSITION=first, prompt_tokens=lambda text: text.split())
    assert token_positions(model, "a red circle on red", "red") == [first + 1, first + 4]
    mapping = refine_map(model, "a circle", "a big circle", 8)
    expected = {**{p: p for p in range(first)}, first: first, first + 2: first + 1}  # target position → source
    expected.update({first + 3 + k: min(first + 2 + k, 7) for k in range(8 - first - 3)})  # the tail, in order
    assert {int(j): int(mapping.matrix[:, j].argmax()) for j in range(8) if mapping.mapped[j]} == expected
    assert int(mapping.mapped.sum()) == len(expected) and mapping.mapped[first + 1] == 0  # "big" is new

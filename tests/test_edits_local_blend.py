"""Local blend (ddim_edit/edits/local_blend.py): the mask of prompt-to-prompt's LocalBlend, pixel composites."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddim_edit.edits.local_blend import (
    blend_mask,
    blended_pixels,
    BlendRule,
    change_weight,
    composite,
    soft_pixel_mask,
    voting_side,
)
from ddim_edit.edits.p2p_control import AttentionController
from ddim_edit.edits.prompt_swap import build_spec, SwapOptions
from ddim_edit.errors import PromptError
from tests.swap_helpers import SOURCE, TARGET


def p2p_local_blend(step_stores, alpha_layers, latent_hw, threshold=0.3, k=1):
    """prompt-to-prompt's LocalBlend, written from the paper's code: the reference.

    ``step_stores``: per step, per branch, the list of the voting layers' maps [heads, res, res, L];
    the attention store sums them over steps; the mask is computed from the sum.
    """
    store = None
    for step in step_stores:
        store = step if store is None else [[a + b for a, b in zip(sa, sb)] for sa, sb in zip(store, step)]
    masks = []
    for branch, layers in enumerate(store):
        maps = torch.stack(layers)  # [layers, heads, res, res, L]
        maps = (maps * alpha_layers[branch]).sum(-1).mean((0, 1))  # words summed, layers and heads averaged
        mask = F.max_pool2d(maps[None, None], (k * 2 + 1, k * 2 + 1), (1, 1), padding=(k, k))
        mask = F.interpolate(mask, size=latent_hw)
        mask = mask / mask.max()
        masks.append(mask.gt(threshold)[0, 0])
    return masks[0] | masks[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blend_mask_matches_prompt_to_prompts_local_blend(tiny_model, seed):
    generator = torch.Generator().manual_seed(seed)
    heads, res, L, latent_hw = 2, 4, 77, (16, 16)
    words = {"source": [2], "target": [2, 3]}
    spec = build_spec(tiny_model, SOURCE, TARGET, SwapOptions(), L)
    controller = AttentionController(spec, words, blend_side=res, latent_hw=latent_hw)
    step_stores = []
    for step in range(3):
        controller.begin_step(step, 3)
        per_branch = []
        for branch in ("source", "target"):
            layers = []
            for layer in range(2):  # two voting layers at 4×4 ...
                probabilities = torch.rand(heads, res * res, L, generator=generator).softmax(-1)
                controller.store(f"up.{layer}", branch, probabilities.mean(0))
                layers.append(probabilities.reshape(heads, res, res, L))
            # ... and one finer layer that must not vote
            controller.store("down.0", branch, torch.rand(64, L, generator=generator).softmax(-1))
            per_branch.append(layers)
        step_stores.append(per_branch)
    alpha = [torch.zeros(L), torch.zeros(L)]
    alpha[0][words["source"]] = 1
    alpha[1][words["target"]] = 1
    for threshold in (0.3, 0.6, 0.8):
        expected = p2p_local_blend(step_stores, alpha, latent_hw, threshold)
        ours = blend_mask(controller.word_maps(), latent_hw, BlendRule(threshold, "max", 1))
        assert torch.equal(ours, expected)


def test_voting_side_is_prompt_to_prompts_16_of_64():
    assert voting_side([64, 32, 16, 8], 64) == 16
    assert voting_side([16, 8], 16) == 8  # no 4×4 layer: the nearest finer one
    assert voting_side([8, 4], 64) == 8


def test_pixel_composite_keeps_the_source_outside_the_grown_mask():
    source = np.full((32, 32, 3), 200, np.uint8)
    edited = np.zeros((32, 32, 3), np.uint8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[3:5, 3:5] = True
    soft = soft_pixel_mask(mask, (32, 32), dilate=1, feather=1)
    assert soft[12:20, 12:20].min() == 1.0  # the mask itself is fully the edit
    assert soft[0, 0] == 0.0
    mixed = composite(edited, source, soft)
    assert (mixed[soft == 0] == 200).all() and (mixed[12:20, 12:20] == 0).all()


def test_change_weight_is_a_linear_ramp_of_the_rgb_distance():
    source = np.zeros((1, 4, 3), np.uint8)
    edited = np.array([[[12, 16, 0], [24, 32, 0], [30, 40, 0], [60, 80, 0]]], np.uint8)  # distances 20, 40, 50, 100
    assert change_weight(edited, source, 20, 60).tolist() == [[0.0, 0.5, 0.75, 1.0]]
    with pytest.raises(PromptError, match="blend_change needs 0 ≤ LOW < HIGH"):
        change_weight(edited, source, 60, 20)


def test_blended_pixels_keep_the_source_where_the_edit_barely_moved():
    """Inside the mask: a faint change (distance 10) reverts to the source, a strong one (150) stays;
    outside it the source wins regardless. No pixel ends farther from the source than the edit."""
    source = np.full((32, 32, 3), 200, np.uint8)
    edited = source.copy()
    edited[8:24, 8:24] = (50, 200, 200)  # the edited object: distance 150
    edited[8:24, 24:32] = (210, 200, 200)  # faint re-rendering next to it: distance 10
    edited[0:4, 0:4] = (0, 0, 0)  # a strong change outside the mask
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:6, 2:8] = True
    out = blended_pixels(edited, source, mask, dilate=0, feather=0, change=(20, 60))
    assert (out[8:24, 8:24] == (50, 200, 200)).all()
    assert (out[8:24, 24:32] == 200).all() and (out[0:4, 0:4] == 200).all()
    plain = blended_pixels(edited, source, mask, dilate=0, feather=0, change=None)
    assert (plain[8:24, 24:32] == (210, 200, 200)).all()
    for result in (out, plain):
        assert (np.abs(result.astype(int) - source).sum(-1) <= np.abs(edited.astype(int) - source).sum(-1)).all()

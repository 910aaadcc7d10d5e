"""Joint attention with the attention step factored out (ddim_edit/joint_attention.py), and the
prompt-to-prompt edit of a joint attention (edits/p2p_control.joint_attention_edit)."""

from __future__ import annotations

import pytest
import torch

from ddim_edit.edits.p2p_control import CrossEdit, joint_attention_edit
from ddim_edit.joint_attention import FLUX, SD3, JointEditProcessor, JointTokens
from ddim_edit.sampler import Conditioning, sample
from tests.flow_helpers import GUIDANCE, PROMPT, SIDE, flow_model, start_noise


@pytest.mark.parametrize("kind", ["sd3", "flux", "flux2"])
def test_the_factored_processor_is_the_families_own(kind):
    """Every site run through JointEditProcessor (plain attend) samples exactly as diffusers' processors do."""
    _, model = flow_model(kind)
    x_T = start_noise(model)
    schedule = model.make_schedule(3, image_size=(SIDE, SIDE))
    conditioning = Conditioning(model.encode([PROMPT]), model.encode_negative([""]))
    theirs = sample(model, schedule, x_T, conditioning, GUIDANCE[kind], progress=False)
    sites = model.attention_sites()
    assert sites and {site.role for site in sites} == {"joint"}
    assert {site.layout for site in sites} == ({"flux2", "flux2-single"} if kind == "flux2" else {kind})
    with model.installed_processors({site.name: JointEditProcessor(site) for site in sites}):
        ours = sample(model, schedule, x_T, conditioning, GUIDANCE[kind], progress=False)
    assert torch.equal(ours, theirs)
    stages = {site.stage for site in sites}
    assert stages == {"encoder", "decoder"}


def test_joint_tokens_in_both_orders():
    assert JointTokens.of(FLUX, 3, 10) == JointTokens(slice(0, 3), slice(3, 10))
    assert JointTokens.of(SD3, 3, 10) == JointTokens(slice(7, 10), slice(0, 7))


def test_the_joint_edit_is_the_edited_probability_matrix_times_v():
    """Against the materialised float64 matrix: image rows take P_src on the image keys (self injection)
    and P_src·G + P_tgt·diag(d) on the text keys, then multiply the target's values."""
    gen = torch.Generator().manual_seed(1)
    heads, image, text, dim = 2, 6, 4, 8
    tokens = JointTokens.of(SD3, text, image + text)
    q_src, k_src, q_tgt, k_tgt, v_tgt = (torch.randn(1, heads, image + text, dim, generator=gen, dtype=torch.float64)
                                         for _ in range(5))
    G = torch.rand(text, text, generator=gen, dtype=torch.float64)  # noqa: N806
    d = torch.rand(text, generator=gen, dtype=torch.float64)
    scale = dim ** -0.5
    p_src = (q_src[:, :, :image] @ k_src.transpose(-1, -2) * scale).softmax(-1)
    p_tgt = (q_tgt[:, :, :image] @ k_tgt.transpose(-1, -2) * scale).softmax(-1)
    for inject_self, cross in ((True, CrossEdit(G, d)), (False, CrossEdit(G, d)), (True, None)):
        edited = torch.cat([p_src[..., :image] if inject_self else p_tgt[..., :image],
                            p_src[..., image:] @ G + p_tgt[..., image:] * d if cross is not None else p_tgt[..., image:]],
                           dim=-1)
        expected = edited @ v_tgt
        out = joint_attention_edit(q_src[:, :, :image], k_src, q_tgt[:, :, :image], k_tgt, v_tgt, tokens, cross,
                                   inject_self, scale)
        assert torch.allclose(out, expected, atol=1e-12)

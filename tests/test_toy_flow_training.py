"""The toy flow model's training computes what SD3's pipeline computes at inference."""

import torch

from ddim_edit.model import toy_model_path
from ddim_edit.toy.components import build_tokenizer
from ddim_edit.toy.flow_components import (
    build_flow_pipeline,
    build_text_encoder_2,
    build_transformer,
    load_bundled_text_encoder,
    load_bundled_vae,
)
from ddim_edit.toy.train import _tokenize
from ddim_edit.toy.train_flow import clip_states, install_repeated_token, sample_sigmas, with_t5_slot


def test_one_repeated_token_equals_the_pipelines_256_zero_tokens():
    bundled = toy_model_path()
    encoders = [load_bundled_text_encoder(bundled).eval(), build_text_encoder_2(build_tokenizer()).eval()]
    transformer = build_transformer(seed=3).eval()
    with torch.no_grad():  # non-zero outputs everywhere (diffusers zero-initialises nothing here, but be sure)
        for p in transformer.parameters():
            p.add_(0.02 * torch.randn_like(p))
    pipeline = build_flow_pipeline(load_bundled_vae(bundled), *encoders, transformer)
    prompts = ["a striped red circle on a white background", ""]
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([700.0, 120.0])
    with torch.no_grad():
        hidden, _, pooled, _ = pipeline.encode_prompt(prompts, None, None, do_classifier_free_guidance=False)
        assert hidden.shape[1] == 77 + 256
        reference = transformer(hidden_states=latents, timestep=t, encoder_hidden_states=hidden,
                                pooled_projections=pooled).sample
        ours_hidden, ours_pooled = clip_states(encoders, _tokenize(build_tokenizer(), prompts))
        install_repeated_token(transformer)
        ours = transformer(hidden_states=latents, timestep=t,
                           encoder_hidden_states=with_t5_slot(ours_hidden, hidden.shape[-1]),
                           pooled_projections=ours_pooled).sample
    torch.testing.assert_close(ours_pooled, pooled)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)
    assert reference.abs().mean() > 1e-2


def test_sigmas_cover_the_unit_interval():
    sigma = sample_sigmas(20000, 3.0, torch.Generator().manual_seed(0))
    assert 0 < sigma.min() < 0.01 and 0.99 < sigma.max() <= 1.0
    assert 0.5 < sigma.mean() < 0.75  # the shifted half leans to noise, the uniform half does not


def test_a_short_training_run_saves_a_folder_plain_diffusers_loads(tmp_path):
    import json

    from diffusers import StableDiffusion3Pipeline

    from ddim_edit.toy.train_flow import FlowTrainConfig, train_flow

    out = tmp_path / "flow"
    log = train_flow(FlowTrainConfig(out=str(out), steps=2, n_train=32, batch=4, threads=1))
    assert log["steps"] == 2 and json.loads((out / "training_log.json").read_text())["steps"] == 2
    pipe = StableDiffusion3Pipeline.from_pretrained(out, text_encoder_3=None, tokenizer_3=None, local_files_only=True)
    assert log["parameters"]["transformer"] == sum(p.numel() for p in pipe.transformer.parameters())
    assert pipe.tokenizer_2("a red circle").input_ids == pipe.tokenizer("a red circle").input_ids

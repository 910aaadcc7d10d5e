"""The tiny flow-matching pipelines (SD3, FLUX) in ddim_edit.testing: they run, their tokenizers give
real ids, and they survive save_pretrained/from_pretrained offline."""

from __future__ import annotations

import pytest
import torch

from ddim_edit.testing import WORDS, tiny_flux_pipeline, tiny_sd3_pipeline

PROMPT = "a red circle on white background"
SAMPLE_SIZE = 8
BUILDERS = {
    "sd3": lambda: tiny_sd3_pipeline(sample_size=SAMPLE_SIZE),
    "sd3-no-t5": lambda: tiny_sd3_pipeline(sample_size=SAMPLE_SIZE, with_t5=False),
    "flux": lambda: tiny_flux_pipeline(sample_size=SAMPLE_SIZE),
}


@pytest.fixture(scope="module", params=list(BUILDERS))
def pipe(request):
    pipe = BUILDERS[request.param]()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tokenizers(pipe) -> dict:
    return {name: tok for name in ("tokenizer", "tokenizer_2", "tokenizer_3")
            if (tok := getattr(pipe, name, None)) is not None}


def latents(pipe, prompt: str = PROMPT, seed: int = 0) -> torch.Tensor:
    size = SAMPLE_SIZE * pipe.vae_scale_factor
    return pipe(prompt, height=size, width=size, num_inference_steps=2, output_type="latent",
                generator=torch.Generator().manual_seed(seed)).images


def test_words_are_in_the_prompt():
    assert set(PROMPT.split()) <= set(WORDS)


def test_call_gives_finite_latents(pipe):
    assert pipe.vae_scale_factor == 8
    out = latents(pipe, " ".join(WORDS[:6]))
    assert torch.isfinite(out).all()
    if type(pipe).__name__ == "FluxPipeline":  # packed: (batch, (h/2)(w/2) tokens, 4 channels × 2 × 2)
        assert out.shape == (1, (SAMPLE_SIZE // 2) ** 2, 16)
    else:
        assert out.shape == (1, 4, SAMPLE_SIZE, SAMPLE_SIZE)


def test_tokenizers_give_real_ids(pipe):
    names = tokenizers(pipe)
    if type(pipe).__name__ == "FluxPipeline":
        assert names.keys() == {"tokenizer", "tokenizer_2"}
    else:
        assert names.keys() == {"tokenizer", "tokenizer_2"} | ({"tokenizer_3"} if pipe.text_encoder_3 else set())
    for name, tok in names.items():
        ids = tok(PROMPT).input_ids
        # one id per word, all distinct, none unknown (CLIP's unknown is its end token, so an unknown
        # word would drop out here and shorten the list)
        words = [i for i in ids if i not in {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}]
        assert len(words) == len(set(words)) == len(PROMPT.split()) > 3, (name, ids)
        assert tok.unk_token_id not in words, (name, ids)


def test_save_and_reload_offline(pipe, tmp_path, offline):
    pipe.save_pretrained(tmp_path, safe_serialization=True)
    # SD3 lists only image_encoder/feature_extractor as optional: a folder saved without T5 (its
    # model_index.json says [null, null]) loads only when the missing parts are passed as None
    missing = {} if getattr(pipe, "text_encoder_3", True) is not None else dict(text_encoder_3=None, tokenizer_3=None)
    reloaded = type(pipe).from_pretrained(tmp_path, local_files_only=True, **missing)
    reloaded.set_progress_bar_config(disable=True)
    before, after = tokenizers(pipe), tokenizers(reloaded)
    assert before.keys() == after.keys()
    for name, tok in before.items():
        assert type(after[name]) is type(tok), name
        assert after[name](PROMPT).input_ids == tok(PROMPT).input_ids, name
        assert after[name]("red green cat", padding="max_length", max_length=20).input_ids == \
            tok("red green cat", padding="max_length", max_length=20).input_ids, name
    # not bit-identical: weights loaded from safetensors sit at other memory alignments, so a BLAS kernel
    # can round differently (seen: 2e-7 in SD3's 8-wide CLIP projection, 2e-6 after two CFG steps)
    torch.testing.assert_close(latents(reloaded), latents(pipe), rtol=1e-4, atol=1e-5)

"""The toy model's components (ddim_edit/toy/components.py) and the bundled toy model folder (assets/toy-model)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

from ddim_edit.toy.components import (  # noqa: E402
    SCHEDULER_CONFIG,
    bpe_vocab_and_merges,
    build_tokenizer,
)
from ddim_edit.toy.world import caption, caption_words, sample_scenes  # noqa: E402

MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "toy-model"
CAPTION = "a striped red circle on a white background"


def _word_ids(tokenizer, text):
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    return ids[1:-1]


def _assert_one_token_per_word(tokenizer):
    vocab = tokenizer.get_vocab()
    assert len(vocab) > 50  # not the 2-token vocabulary of a mis-built tokenizer
    words = caption_words()
    ids = [_word_ids(tokenizer, w) for w in words]
    assert all(len(i) == 1 for i in ids), dict(zip(words, ids))
    assert len({i[0] for i in ids}) == len(words)
    assert all(i[0] == vocab[w + "</w>"] for w, i in zip(words, ids))
    expected = [vocab[w + "</w>"] for w in CAPTION.split()]
    assert _word_ids(tokenizer, CAPTION) == expected
    assert tokenizer.unk_token_id not in expected or tokenizer.unk_token_id == tokenizer.eos_token_id


def test_bpe_merges_build_every_word():
    vocab, merges = bpe_vocab_and_merges()
    for a, b in merges:
        assert a in vocab and b in vocab and a + b in vocab
    for word in caption_words():
        assert word + "</w>" in vocab


def test_tokenizer_ids_and_round_trip(tmp_path):
    tokenizer = build_tokenizer()
    _assert_one_token_per_word(tokenizer)
    tokenizer.save_pretrained(tmp_path)
    reloaded = CLIPTokenizer.from_pretrained(tmp_path)
    _assert_one_token_per_word(reloaded)
    assert reloaded(CAPTION).input_ids == tokenizer(CAPTION).input_ids
    padded = reloaded(CAPTION, padding="max_length", max_length=77).input_ids
    assert len(padded) == 77


@pytest.fixture(scope="module")
def pipeline():
    return StableDiffusionPipeline.from_pretrained(MODEL_DIR)


@pytest.fixture()
def one_thread():
    """Tiny models run fastest on one thread, and far faster than on two when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_components_are_stable_diffusion_classes(pipeline):
    assert isinstance(pipeline.unet, UNet2DConditionModel)
    assert isinstance(pipeline.vae, AutoencoderKL)
    assert isinstance(pipeline.text_encoder, CLIPTextModel)
    assert isinstance(pipeline.tokenizer, CLIPTokenizer)
    assert isinstance(pipeline.scheduler, DDIMScheduler)
    assert pipeline.safety_checker is None
    for key, value in SCHEDULER_CONFIG.items():
        assert pipeline.scheduler.config[key] == value, key
    assert pipeline.unet.config.cross_attention_dim == pipeline.text_encoder.config.hidden_size
    assert pipeline.unet.config.sample_size == 16 and pipeline.vae_scale_factor == 4
    assert pipeline.vae.config.scaling_factor != 1.0  # set from the trained latents
    assert "CrossAttnDownBlock2D" in pipeline.unet.config.down_block_types


def test_bundled_tokenizer_ids(pipeline):
    _assert_one_token_per_word(pipeline.tokenizer)
    assert pipeline.tokenizer.model_max_length == 77
    assert (MODEL_DIR / "tokenizer" / "vocab.json").exists()
    assert (MODEL_DIR / "tokenizer" / "merges.txt").exists()


def test_weights_are_small():
    total = sum(p.stat().st_size for p in MODEL_DIR.rglob("*.safetensors"))
    assert 0 < total <= 25 * 1024 * 1024
    assert not list(MODEL_DIR.rglob("*.bin"))


def test_pipeline_generates_a_64px_image(pipeline, one_thread):
    prompt = caption(sample_scenes(1000, 1)[0])
    generator = torch.Generator().manual_seed(0)
    out = pipeline(prompt, num_inference_steps=4, guidance_scale=6.0, generator=generator,
                   output_type="np")
    image = out.images[0]
    assert image.shape == (64, 64, 3)
    assert np.isfinite(image).all() and 0.0 <= image.min() and image.max() <= 1.0


def test_vae_round_trip_shapes(pipeline, one_thread):
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        latents = pipeline.vae.encode(x).latent_dist.mean
        assert latents.shape == (1, 4, 16, 16)
        assert pipeline.vae.decode(latents).sample.shape == (1, 3, 64, 64)


def test_bundled_model_draws_its_captions(pipeline, one_thread):
    """Regression guard on the model's quality (the full measurement is ``toy.evaluate``): unseen
    captions, 20 DDIM steps, scored by the attribute reader; a model that ignores its text fails."""
    from ddim_edit.toy.evaluate import text_to_image
    from ddim_edit.toy.reader import attribute_accuracy

    scenes = sample_scenes(2000, 8)
    images = text_to_image(pipeline, scenes, steps=20, guidance=5.0, seed=0)
    assert attribute_accuracy(list(images), scenes)["all"] >= 0.75
    shifted = attribute_accuracy(list(images), scenes[1:] + scenes[:1])  # captions of other scenes
    assert shifted["all"] <= 0.25


def test_bundled_vae_round_trip_above_30_db(pipeline, one_thread):
    from ddim_edit.toy.evaluate import vae_round_trip

    assert vae_round_trip(pipeline.vae, sample_scenes(2000, 16))["vae_psnr_db"] >= 30.0

"""The toy flow model's card up to its measured quality (``toy.evaluate --card`` writes the rest)."""

from __future__ import annotations


def flow_card_head(model: str, log: dict, guidance: float, size_mb: float, total: int) -> str:
    """What the toy flow model is, its parts and its training, from ``training_log.json``'s ``log``."""
    parameters = log.get("parameters", {})
    return f"""# ddim-edit toy flow model

A tiny rectified-flow text-to-image model in the **Stable Diffusion 3 format** (a
`StableDiffusion3Pipeline` folder: `SD3Transformer2DModel`, `AutoencoderKL`, two
`CLIPTextModelWithProjection` + `CLIPTokenizer`, no T5, `FlowMatchEulerDiscreteScheduler`), trained on
the same synthetic *toy world* and captions as the bundled toy model (`assets/toy-model`), so that
flow-model edits are measured against exact ground truth beside it. `--model toy-flow` selects it.
Plain diffusers loads it (T5 is absent, as when SD3 is loaded without it):

```python
from diffusers import StableDiffusion3Pipeline
pipe = StableDiffusion3Pipeline.from_pretrained("assets/toy-flow-model", text_encoder_3=None, tokenizer_3=None)
image = pipe("a solid blue star on a beige background", num_inference_steps=50,
             guidance_scale={guidance:g}).images[0]   # 64x64
```

## Components

| part | class | parameters |
|---|---|---|
| denoiser | `SD3Transformer2DModel` (4 joint blocks, 128 wide, 4 heads; 2x2 patches of 16x16x4 latents: 64 image tokens) | {parameters.get('transformer', 0):,} |
| autoencoder | `AutoencoderKL`: the bundled toy model's, unchanged (`shift_factor` 0) | {parameters.get('vae', 0):,} |
| text encoder (CLIP-L's place) | `CLIPTextModelWithProjection` (128 wide, 3 layers), started from the bundled model's text encoder | {parameters.get('text_encoder', 0):,} |
| text encoder 2 (CLIP-G's place) | `CLIPTextModelWithProjection` (64 wide, 2 layers) | {parameters.get('text_encoder_2', 0):,} |
| scheduler | `FlowMatchEulerDiscreteScheduler`, SD3's config (shift 3) | - |
| **total** | fp32 safetensors, {size_mb:.1f} MB | {total:,} |

## Training

`{log.get('command', 'python -m ddim_edit.toy.train_flow')}` (`ddim_edit/toy/train_flow.py`), with
{log.get('threads', '?')} torch thread(s) on a {log.get('cpu_count', '?')}-core CPU, torch {log.get('torch', '?')}:

- data: `sample_scenes({log.get('train_seed', '?')}, {log.get('n_train_scenes', '?')})`, rendered at 64x64 (the bundled model's
  training scenes), encoded once by the VAE;
- transformer + both text encoders: {log.get('steps', '?')} steps ({log.get('minutes', '?')} min), batch {log.get('batch', '?')}, learning
  rate {log.get('lr', '?')} with warm-up and cosine decay; rectified-flow objective (v = noise − x_0 at
  x_σ = (1 − σ) x_0 + σ·noise), σ {log.get('sigma_sampling', '?')}; {log.get('caption_dropout', 0):.0%} empty captions (for
  classifier-free guidance); EMA {log.get('ema_decay', '?')} of the weights saved; final training loss
  {log.get('final_loss') or float('nan'):.4f};
- the pipeline's 256 zero T5 vectors are trained as one token whose logit is raised by log 256 (the same
  function; `tests/test_toy_flow_training.py` checks it against the pipeline);
- {log.get('wall_minutes', '?')} min wall clock with rendering, encoding and saving. The full log is
  `training_log.json`; the evaluation's numbers are in `evaluation.json`.

"""

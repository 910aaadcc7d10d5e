"""Token grounding: fine-tune a toy model so each caption word's cross-attention lies on what it names.

Prompt-to-prompt edits through the cross-attention maps of the prompt's words: its local blend
thresholds the changed word's map, and its injection keeps the source's layout per token. In Stable
Diffusion a noun's map covers its object. The toy model trained from scratch (``toy.train``) learns
its own text encoder, and most of its attention goes to the end-of-text and padding positions,
which see the whole caption; its word maps are only loosely placed.

This fine-tune adds TokenCompose's token loss (Wang et al., CVPR 2024) to the epsilon objective:
for each grounded word j with region M_j and its cross-attention map A_j (averaged over heads,
normalised over the image positions), L_token = 1 − Σ_q A_j(q) M_j(q), averaged over the words and
the cross-attention layers of at least ``min_side`` positions a side. The toy world knows each
word's region exactly: the fill, colour and shape words name the shape's silhouette, the background
colour word and "background" name the rest. The model keeps the Stable Diffusion format; nothing
changes at inference.

The fine-tune places the word maps well but hardly moves the edits (the measurements: the docs'
tuning page), so the bundled model is not fine-tuned this way; it stays as a tool for measuring
attention-dependent parts.

``python -m ddim_edit.toy.grounding --model assets/toy-model --out /tmp/toy-grounded``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import DdimEditError, ModelLoadError
from .components import SCHEDULER_CONFIG
from .train import (
    TRAIN_SEED,
    TrainConfig,
    _tokenize,
    check_out_folder,
    encode_dataset,
    epsilon_loss_weights,
    publish_with_log,
    render_dataset,
    save_beside,
    update_ema,
)
from .world import Scene, caption, sample_scenes, shape_mask

OBJECT, BACKGROUND = 1, -1


@dataclass
class GroundingConfig:
    """Settings of :func:`finetune`: the base pipeline folder ``model``, the output folder ``out``,
    ``steps`` of AdamW at ``lr`` on batches of ``batch``, the token loss's ``weight`` and the
    smallest layer side it reads (``min_side``), the EMA decay of the saved weights, the batch
    draws' ``seed``, torch ``threads``, and ``force`` to replace a non-empty ``out``. The scenes
    and the objective's settings are the base model's (:func:`base_training`)."""

    model: str
    out: str
    steps: int = 1500
    weight: float = 0.02
    lr: float = 1e-4
    batch: int = 32
    ema_decay: float = 0.995
    min_side: int = 8
    seed: int = TRAIN_SEED
    threads: int = 2
    force: bool = False


def base_training(model: str) -> dict:
    """The base model's training scenes and objective, from its ``training_log.json`` (``toy.train``'s
    defaults where it has none): the fine-tune uses the same."""
    path = os.path.join(model, "training_log.json")
    log = json.load(open(path)) if os.path.exists(path) else {}
    return {"n_train": log.get("n_train_scenes", TrainConfig.n_train), "scene_seed": log.get("train_seed", TRAIN_SEED),
            "caption_dropout": log.get("caption_dropout", TrainConfig.caption_dropout),
            "snr_gamma": log.get("snr_gamma", TrainConfig.snr_gamma), "log": log}


def token_roles(scene: Scene, tokens: list[str], length: int) -> torch.Tensor:
    """Per padded position (0: start token) of ``caption(scene)``: +1 for a word naming the shape
    (fill, colour, shape), −1 for one naming the background (its colour, "background"), else 0.

    ``tokens``: the caption's word pieces without start/end tokens; the toy tokenizer has one per word.
    """
    words = caption(scene).split()  # "<article> <fill> <colour> <shape> on a <background> background"
    pieces = [token.replace("</w>", "") for token in tokens]
    if pieces != words:
        raise ValueError(f"the tokenizer splits {caption(scene)!r} into {tokens}; grounding needs one token per word")
    roles = torch.zeros(length)
    roles[2:5] = OBJECT
    roles[len(words) - 1:len(words) + 1] = BACKGROUND
    return roles


class AttentionRecorder:
    """An attention processor that computes attention explicitly and keeps each cross-attention
    layer's probabilities (with their gradients) in ``records`` as (heads, [B·heads, Q, L])."""

    def __init__(self):
        self.records: list[tuple[int, torch.Tensor]] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        cross = encoder_hidden_states is not None
        context = encoder_hidden_states if cross else hidden_states
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probabilities = attn.get_attention_scores(query, key, None)
        if cross:
            self.records.append((attn.heads, probabilities))
        out = attn.batch_to_head_dim(torch.bmm(probabilities, value))
        return attn.to_out[1](attn.to_out[0](out))


def grounding_loss(records: list[tuple[int, torch.Tensor]], regions: torch.Tensor, roles: torch.Tensor,
                   min_side: int = 8) -> torch.Tensor:
    """TokenCompose's token loss: mean over grounded words and layers of 1 − (attention mass on the word's region).

    Args:
        records: per cross-attention layer, (heads, probabilities [B·heads, Q, L]) on a square grid.
        regions: the shape's silhouette per sample, float [B, 1, H, W] in [0, 1].
        roles: [B, L] from :func:`token_roles` (rows of 0 for samples without a caption).
        min_side: layers with fewer positions a side are left out.
    """
    batch = regions.shape[0]
    grounded = (roles != 0).sum().clamp_min(1)
    losses = []
    for heads, probabilities in records:
        queries = probabilities.shape[1]
        side = int(round(queries ** 0.5))
        if side < min_side or side * side != queries:
            continue
        maps = probabilities.reshape(batch, heads, queries, -1).mean(1)  # [B, Q, L]
        maps = maps / maps.sum(1, keepdim=True).clamp_min(1e-12)  # each token's map over the image
        on_object = (maps * F.adaptive_avg_pool2d(regions, side).reshape(batch, queries, 1)).sum(1)  # [B, L]
        mass = torch.where(roles == OBJECT, on_object, torch.where(roles == BACKGROUND, 1 - on_object,
                                                                   torch.ones_like(on_object)))
        losses.append((1 - mass).sum() / grounded)
    if not losses:
        raise ValueError(f"no cross-attention layer has at least {min_side} positions a side")
    return torch.stack(losses).mean()


def finetune(config: GroundingConfig) -> dict:
    """Fine-tune ``config.model`` with the epsilon objective + ``weight`` × :func:`grounding_loss`;
    save the pipeline (EMA weights) to ``config.out``; returns the log, also added to
    ``training_log.json`` under ``grounding``."""
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    if not os.path.isfile(os.path.join(config.model, "model_index.json")):
        raise ModelLoadError(f"--model {config.model} is not a pipeline folder (no model_index.json); "
                             "give a toy model folder such as assets/toy-model")
    check_out_folder(config.out, config.force)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    start = time.monotonic()
    pipeline = StableDiffusionPipeline.from_pretrained(config.model, safety_checker=None,
                                                       requires_safety_checker=False)
    unet, text_encoder, vae, tokenizer = pipeline.unet, pipeline.text_encoder, pipeline.vae, pipeline.tokenizer
    base = base_training(config.model)
    scenes = sample_scenes(base["scene_seed"], base["n_train"])
    pixels, captions = render_dataset(scenes)
    regions = torch.from_numpy(np.stack([shape_mask(s, pixels.shape[-1]) for s in scenes]).astype(np.float32))[:, None]
    latents = encode_dataset(vae, pixels) * vae.config.scaling_factor
    ids = _tokenize(tokenizer, captions)
    empty = _tokenize(tokenizer, [""])[0]
    length = ids.shape[1]
    roles = torch.stack([token_roles(scene, tokenizer.convert_ids_to_tokens(ids[k][1:1 + len(text.split())].tolist()),
                                     length) for k, (scene, text) in enumerate(zip(scenes, captions))])

    alphas_cumprod, loss_weight = epsilon_loss_weights(base["snr_gamma"])
    recorder = AttentionRecorder()
    unet.set_attn_processor(recorder)
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in parameters]
    generator = torch.Generator().manual_seed(config.seed)
    unet.train()
    text_encoder.train()
    history, first = [], None
    bar = tqdm(range(config.steps), desc="grounding", file=sys.stderr)
    for step in bar:
        index = torch.randint(0, len(scenes), (config.batch,), generator=generator)
        drop = torch.rand(config.batch, generator=generator) < base["caption_dropout"]
        batch_ids = torch.where(drop[:, None], empty[None], ids[index])
        timesteps = torch.randint(0, SCHEDULER_CONFIG["num_train_timesteps"], (config.batch,), generator=generator)
        noise = torch.randn(latents[index].shape, generator=generator)
        alpha = alphas_cumprod[timesteps][:, None, None, None]
        noisy = alpha.sqrt() * latents[index] + (1.0 - alpha).sqrt() * noise
        recorder.records.clear()
        eps = unet(noisy, timesteps, text_encoder(batch_ids)[0]).sample
        diffusion = (((eps - noise) ** 2).mean(dim=(1, 2, 3)) * loss_weight[timesteps]).mean()
        token = grounding_loss(recorder.records, regions[index], roles[index] * (~drop)[:, None], config.min_side)
        loss = diffusion + config.weight * token
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        update_ema(ema, parameters, step, config.ema_decay)
        first = first or (diffusion.item(), token.item())
        history.append((round(diffusion.item(), 5), round(token.item(), 4)))
        bar.set_postfix(diffusion=f"{diffusion.item():.4f}", token=f"{token.item():.3f}")
    recorder.records.clear()
    with torch.no_grad():
        for average, p in zip(ema, parameters):
            p.copy_(average)
    unet.set_attn_processor(AttnProcessor2_0())
    unet.eval()
    text_encoder.eval()

    folder = save_beside(pipeline, config.out)
    tail = history[-100:]
    log = {
        "command": "python -m ddim_edit.toy.grounding " + " ".join(sys.argv[1:]),
        "base_model": config.model,
        "steps": config.steps,
        "weight": config.weight,
        "lr": config.lr,
        "batch": config.batch,
        "ema_decay": config.ema_decay,
        "min_side": config.min_side,
        "n_train_scenes": base["n_train"],
        "train_seed": base["scene_seed"],
        "batch_seed": config.seed,
        "token_loss_first": round(first[1], 4) if first else None,
        "token_loss_last100": round(float(np.mean([t for _, t in tail])), 4) if tail else None,
        "diffusion_loss_first": round(first[0], 5) if first else None,
        "diffusion_loss_last100": round(float(np.mean([d for d, _ in tail])), 5) if tail else None,
        "minutes": round((time.monotonic() - start) / 60, 2),
        "threads": config.threads,
        "torch": torch.__version__,
        "history": history[::10],
    }
    publish_with_log(folder, config.out, {**base["log"], "grounding": log})
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:3]),
                                     epilog="example:\n  " + __doc__.strip().split("\n\n")[-1].strip("`"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the trained toy pipeline folder to start from")
    parser.add_argument("--out", required=True, help="output pipeline folder")
    parser.add_argument("--steps", type=int, default=GroundingConfig.steps, help="fine-tuning steps")
    parser.add_argument("--weight", type=float, default=GroundingConfig.weight, help="weight of the token loss")
    parser.add_argument("--lr", type=float, default=GroundingConfig.lr, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=GroundingConfig.seed,
                        help="seed of the batch draws (the scenes are the base model's training scenes)")
    parser.add_argument("--threads", type=int, default=GroundingConfig.threads, help="torch threads")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.weight < 0:
        parser.error("--steps must be ≥ 1 and --weight ≥ 0")
    config = GroundingConfig(**vars(args))
    try:
        log = finetune(config)
    except (DdimEditError, OSError) as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps({k: v for k, v in log.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()

"""Train the toy flow model (SD3 layout) on the toy world, on a CPU, within a wall-clock budget.

    python -m ddim_edit.toy.train_flow --out assets/toy-flow-model --minutes 55 --force

The same training scenes and captions as the bundled toy model (``sample_scenes(0, 6000)``); its
trained VAE is reused as is (``shift_factor`` 0) and its text encoder starts the first CLIP.
Rectified-flow objective: x_σ = (1 − σ)·x_0 + σ·n, the transformer predicts v = n − x_0 at timestep
1000·σ, σ drawn half uniformly and half from SD3's training density (logit-normal, then shifted by
the scheduler's shift 3); 10 % empty captions (classifier-free guidance); an exponential moving
average of the weights (transformer and both text encoders) is what gets saved.

Without T5, SD3's pipeline appends 256 zero vectors to the 77 CLIP states. Those 256 tokens stay
identical through every block (SD3 gives text tokens no positions), so attending to them equals
attending to one of them with its logit raised by log 256: training runs that one token
(:class:`RepeatedTokenProcessor`), 3.7× faster than the full sequence and the same function —
``tests/test_toy_flow.py`` checks it against the pipeline's own prompt encoding and transformer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention import AttentionSite
from ..errors import DdimEditError
from ..joint_attention import SD3, JointEditProcessor, JointTokens
from ..model import toy_model_path
from ..sd3_model import SD3Model
from .components import build_tokenizer, count_parameters
from .flow_components import (
    FLOW_SCHEDULER_CONFIG,
    build_flow_pipeline,
    build_text_encoder_2,
    build_transformer,
    load_bundled_text_encoder,
    load_bundled_vae,
)
from .train import (
    TRAIN_SEED,
    _Phase,
    _tokenize,
    caption_ids,
    check_out_folder,
    encode_dataset,
    keep_average,
    lr_factor,
    optimizer_step,
    publish_with_log,
    render_dataset,
    save_beside,
    update_ema,
)
from .world import sample_scenes

T5_SLOTS = SD3Model.MAX_SEQUENCE_LENGTH
"""The zero vectors SD3's pipeline appends in T5's place."""


class RepeatedTokenProcessor(JointEditProcessor):
    """SD3's joint attention where the sequence's last text token stands for ``repeats`` identical ones."""

    def __init__(self, name: str, repeats: int):
        super().__init__(AttentionSite(name, "joint", "encoder", 0, SD3))
        self.log_repeats = math.log(repeats)

    def attend(self, query, key, value, attn, tokens: JointTokens):
        bias = torch.zeros(1, 1, 1, key.shape[2], dtype=query.dtype, device=query.device)
        bias[..., -1] = self.log_repeats
        return F.scaled_dot_product_attention(query, key, value, attn_mask=bias)


def install_repeated_token(transformer, repeats: int = T5_SLOTS) -> dict:
    """Make every joint attention of ``transformer`` treat the last text token as ``repeats`` copies;
    returns the processors it replaced."""
    original = dict(transformer.attn_processors)
    transformer.set_attn_processor({name: RepeatedTokenProcessor(name, repeats) for name in original})
    return original


def clip_states(encoders, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SD3's CLIP conditioning: each encoder's penultimate hidden states side by side, and their
    pooled (projected) embeddings side by side (``StableDiffusion3Pipeline.encode_prompt``)."""
    outputs = [encoder(token_ids, output_hidden_states=True) for encoder in encoders]
    hidden = torch.cat([out.hidden_states[-2] for out in outputs], dim=-1)
    pooled = torch.cat([out[0] for out in outputs], dim=-1)
    return hidden, pooled


def with_t5_slot(hidden: torch.Tensor, joint_dim: int) -> torch.Tensor:
    """CLIP states padded to the joint width, then one zero token standing for T5's zeros."""
    hidden = F.pad(hidden, (0, joint_dim - hidden.shape[-1]))
    return torch.cat([hidden, hidden.new_zeros(hidden.shape[0], 1, joint_dim)], dim=1)


def sample_sigmas(n: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Half uniform in (0, 1), half SD3's logit-normal(0, 1) shifted as the scheduler shifts."""
    uniform = torch.rand(n, generator=generator)
    logit_normal = torch.sigmoid(torch.randn(n, generator=generator))
    shifted = shift * logit_normal / (1 + (shift - 1) * logit_normal)
    use_uniform = torch.rand(n, generator=generator) < 0.5
    return torch.where(use_uniform, uniform, shifted).clamp(1e-4, 1.0)


@dataclass
class FlowTrainConfig:
    out: str
    minutes: float = 55.0
    steps: int | None = None
    n_train: int = 6000
    seed: int = TRAIN_SEED
    batch: int = 32
    lr: float = 5e-4
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    threads: int = 2
    force: bool = False


def train_flow(config: FlowTrainConfig) -> dict:
    """Train and save the pipeline to ``config.out``; returns the training log."""
    check_out_folder(config.out, config.force)
    torch.set_num_threads(config.threads)
    wall_start = time.monotonic()
    generator = torch.Generator().manual_seed(config.seed)
    bundled = toy_model_path()
    tokenizer = build_tokenizer()
    vae = load_bundled_vae(bundled)
    encoders = [load_bundled_text_encoder(bundled, config.seed), build_text_encoder_2(tokenizer, config.seed)]
    transformer = build_transformer(config.seed)
    joint_dim = transformer.config.joint_attention_dim
    original_processors = install_repeated_token(transformer)

    pixels, captions = render_dataset(sample_scenes(config.seed, config.n_train))
    latents = (encode_dataset(vae, pixels) - vae.config.shift_factor) * vae.config.scaling_factor
    unique = sorted(set(captions))
    caption_index = torch.tensor([unique.index(c) for c in captions])
    token_ids = _tokenize(tokenizer, unique + [""])
    empty_index = len(unique)

    parameters = [p for module in (transformer, *encoders) for p in module.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in parameters]
    state: dict = {}
    phase = _Phase("flow", config.steps, config.minutes * 60, state, metric="loss", digits=4, history_digits=5,
                   checkpoint_minutes=1e9)
    for module in (transformer, *encoders):
        module.train()
    while not phase.done:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(phase.progress, warmup=0.02, floor=0.05)
        index = torch.randint(0, latents.shape[0], (config.batch,), generator=generator)
        x0 = latents[index]
        ids = caption_ids(token_ids, caption_index, index, empty_index, config.caption_dropout, generator)
        sigma = sample_sigmas(config.batch, FLOW_SCHEDULER_CONFIG["shift"], generator)
        noise = torch.randn(x0.shape, generator=generator)
        xt = (1 - sigma[:, None, None, None]) * x0 + sigma[:, None, None, None] * noise
        hidden, pooled = clip_states(encoders, ids)
        v = transformer(hidden_states=xt, timestep=sigma * 1000, encoder_hidden_states=with_t5_slot(hidden, joint_dim),
                        pooled_projections=pooled).sample
        loss = F.mse_loss(v, noise - x0)
        optimizer_step(loss, optimizer, parameters)
        phase.tick()
        update_ema(ema, parameters, phase.step, config.ema_decay)
        phase.record(loss.item(), optimizer.param_groups[0]["lr"])
    phase.bar.close()
    keep_average(ema, parameters)
    for module in (transformer, *encoders):
        module.eval()
    transformer.set_attn_processor(original_processors)

    pipeline = build_flow_pipeline(vae, encoders[0], encoders[1], transformer)
    folder = save_beside(pipeline, config.out)
    save_beside_tokenizer_2(folder)
    log = {
        "command": "python -m ddim_edit.toy.train_flow " + " ".join(sys.argv[1:]),
        "budget_minutes": config.minutes,
        "train_seed": config.seed,
        "n_train_scenes": config.n_train,
        "steps": phase.step,
        "minutes": round(phase.elapsed / 60, 2),
        "batch": config.batch,
        "lr": config.lr,
        "final_loss": phase.running,
        "caption_dropout": config.caption_dropout,
        "ema_decay": config.ema_decay,
        "sigma_sampling": f"half uniform, half logit-normal(0, 1) shifted by {FLOW_SCHEDULER_CONFIG['shift']:g}",
        "wall_minutes": round((time.monotonic() - wall_start) / 60, 2),
        "threads": config.threads,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "parameters": {
            "transformer": count_parameters(transformer),
            "vae": count_parameters(vae),
            "text_encoder": count_parameters(encoders[0]),
            "text_encoder_2": count_parameters(encoders[1]),
        },
        "torch": torch.__version__,
        "history": state.get("flow_history", []),
    }
    publish_with_log(folder, config.out, log)
    return log


def save_beside_tokenizer_2(folder: str) -> None:
    """The second tokenizer's slow files too (``save_beside`` writes the first's)."""
    from .components import write_slow_tokenizer_files

    write_slow_tokenizer_files(os.path.join(folder, "tokenizer_2"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output pipeline folder")
    parser.add_argument("--minutes", type=float, default=FlowTrainConfig.minutes, help="wall-clock training budget")
    parser.add_argument("--steps", type=int, default=FlowTrainConfig.steps, help="fixed steps (overrides --minutes)")
    parser.add_argument("--n-train", type=int, default=FlowTrainConfig.n_train, help="training scenes")
    parser.add_argument("--seed", type=int, default=FlowTrainConfig.seed, help="scene and weight seed")
    parser.add_argument("--batch", type=int, default=FlowTrainConfig.batch)
    parser.add_argument("--lr", type=float, default=FlowTrainConfig.lr)
    parser.add_argument("--threads", type=int, default=FlowTrainConfig.threads, help="torch threads")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    config = FlowTrainConfig(**vars(parser.parse_args(argv)))
    try:
        log = train_flow(config)
    except DdimEditError as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps({k: v for k, v in log.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()

"""Train the bundled toy model on the toy world, on a CPU, within a wall-clock budget.

    python -m ddim_edit.toy.train --out assets/toy-model --minutes 56 --force [--resume]

Phases:

1. **VAE** (``AutoencoderKL``): MSE reconstruction + a small KL term on rendered training scenes
   (random horizontal flips: every shape of the world is mirror-symmetric), AdamW with warm-up and a
   cosine decay over the phase's budget. Afterwards ``vae.config.scaling_factor`` is set to
   ``1 / std`` of the training latents, as Stable Diffusion does.
2. **Latents**: the training scenes are encoded once (posterior means).
3. **Diffusion** (``UNet2DConditionModel`` + ``CLIPTextModel``): the epsilon objective of DDPM with
   Stable Diffusion 1.5's betas, uniform t in [0, 1000), Min-SNR-5 loss weighting, 10 % of the
   captions replaced by the empty string (for classifier-free guidance); an exponential moving
   average of the weights is what gets saved.

Each phase stops at its step count (``--vae-steps`` / ``--unet-steps``) if given, otherwise when its
share of the wall-clock budget is spent; the learning-rate schedule follows whichever is used. A
resumable state file is written every ``--checkpoint-minutes`` and at the end of each phase.

Training scenes come from ``sample_scenes(--seed, --n-train)`` (seed 0 by default); evaluation uses
seeds 1000 and up (``python -m ddim_edit.toy.evaluate``), which are disjoint scene draws.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import DdimEditError, OutputError
from .components import (
    MAX_LENGTH,
    SCHEDULER_CONFIG,
    build_pipeline,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    count_parameters,
    write_slow_tokenizer_files,
)
from .world import caption, render, sample_scenes

TRAIN_SEED = 0
DEFAULT_STATE = os.path.join(tempfile.gettempdir(), "ddim-edit-toy-train-state.pt")


@dataclass
class TrainConfig:
    out: str
    minutes: float = 56.0
    vae_share: float = 0.33
    vae_steps: int | None = None
    unet_steps: int | None = None
    n_train: int = 6000
    seed: int = TRAIN_SEED
    vae_batch: int = 16
    vae_lr: float = 2e-3
    kl_weight: float = 1e-6
    unet_batch: int = 32
    unet_lr: float = 1e-3
    caption_dropout: float = 0.1
    snr_gamma: float = 5.0
    ema_decay: float = 0.999
    threads: int = 2
    state: str = DEFAULT_STATE
    checkpoint_minutes: float = 3.0
    resume: bool = False
    force: bool = False


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def render_dataset(scenes: list) -> tuple[torch.Tensor, list[str]]:
    """The scenes' images in [-1, 1], ``(N, 3, 64, 64)``, and their captions."""
    images = np.stack([render(s) for s in tqdm(scenes, desc="render", file=sys.stderr)])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return pixels, [caption(s) for s in scenes]


def lr_factor(progress: float, warmup: float = 0.03, floor: float = 0.02) -> float:
    """Linear warm-up then cosine decay to ``floor``; ``progress`` in [0, 1]."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    p = min((progress - warmup) / (1.0 - warmup), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


class _Phase:
    """One training phase's bookkeeping: progress by steps (if given) or by wall-clock seconds, the
    progress bar, the smoothed metric and its history, and the checkpoint clock.

    Resumes from ``state[f"{name}_step"]`` / ``state[f"{name}_elapsed"]``; the history list lives in
    ``state[f"{name}_history"]`` so that checkpoints carry it.
    """

    def __init__(self, name: str, steps: int | None, seconds: float, state: dict, metric: str,
                 digits: int, history_digits: int, checkpoint_minutes: float):
        self.steps, self.seconds = steps, seconds
        self.step, self.elapsed = state.get(f"{name}_step", 0), state.get(f"{name}_elapsed", 0.0)
        self._start = time.monotonic() - self.elapsed
        self.history = state.setdefault(f"{name}_history", [])
        self.metric, self.digits, self.history_digits = metric, digits, history_digits
        self.running: float | None = None
        self.bar = tqdm(desc=name, total=steps or int(seconds), file=sys.stderr)
        self._checkpoint_seconds = checkpoint_minutes * 60
        self._last_checkpoint = time.monotonic()

    def tick(self) -> None:
        self.step += 1
        self.elapsed = time.monotonic() - self._start

    def record(self, value: float, lr: float) -> None:
        """Fold this step's metric into the running average (0.98), the bar and every 50th step's history."""
        self.running = value if self.running is None else 0.98 * self.running + 0.02 * value
        self.bar.n = self.step if self.steps else int(self.elapsed)
        self.bar.set_postfix({"step": self.step, self.metric: f"{self.running:.{self.digits}f}", "lr": f"{lr:.1e}"})
        if self.step % 50 == 0:
            self.history.append((self.step, round(self.elapsed, 1), round(self.running, self.history_digits)))

    def checkpoint_due(self) -> bool:
        """True once every ``checkpoint_minutes`` (and restarts the clock)."""
        if time.monotonic() - self._last_checkpoint <= self._checkpoint_seconds:
            return False
        self._last_checkpoint = time.monotonic()
        return True

    @property
    def progress(self) -> float:
        if self.steps is not None:
            return self.step / max(self.steps, 1)
        return self.elapsed / max(self.seconds, 1e-9)

    @property
    def done(self) -> bool:
        return self.progress >= 1.0


def batch_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of the mean squared error over a batch of images in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(a.clamp(-1, 1), b.clamp(-1, 1)).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def _random_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def train_vae(vae, pixels, config: TrainConfig, state: dict, generator: torch.Generator) -> dict:
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    if "vae_optimizer" in state:
        optimizer.load_state_dict(state["vae_optimizer"])
    seconds = config.minutes * 60 * config.vae_share
    phase = _Phase("vae", config.vae_steps, seconds, state, metric="psnr", digits=1, history_digits=2,
                   checkpoint_minutes=config.checkpoint_minutes)
    vae.train()
    while not phase.done:
        for group in optimizer.param_groups:
            group["lr"] = config.vae_lr * lr_factor(phase.progress)
        index = torch.randint(0, pixels.shape[0], (config.vae_batch,), generator=generator)
        batch = _random_flip(pixels[index], generator)
        posterior = vae.encode(batch).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(
            posterior.mean.shape, generator=generator
        )
        reconstruction = vae.decode(latents).sample
        mse = F.mse_loss(reconstruction, batch)
        kl = posterior.kl().mean() / batch[0].numel()
        loss = mse + config.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        phase.tick()
        phase.record(10 * math.log10(4.0 / max(mse.item(), 1e-12)), optimizer.param_groups[0]["lr"])
        if phase.checkpoint_due():
            state.update(vae_step=phase.step, vae_elapsed=phase.elapsed,
                         vae_optimizer=optimizer.state_dict())
            _save_state(state, config, vae=vae, generator=generator)
    phase.bar.close()
    vae.eval()
    state.update(vae_step=phase.step, vae_elapsed=phase.elapsed, vae_train_psnr=phase.running)
    state.pop("vae_optimizer", None)
    return state


@torch.no_grad()
def encode_dataset(vae, pixels: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Posterior means of the images, ``(N, 4, 16, 16)``, unscaled."""
    means = []
    for start in tqdm(range(0, pixels.shape[0], batch), desc="encode", file=sys.stderr):
        means.append(vae.encode(pixels[start : start + batch]).latent_dist.mean)
    return torch.cat(means)


def _tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    # Exactly as StableDiffusionPipeline.encode_prompt tokenizes (no attention mask is passed).
    return tokenizer(
        texts, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids


def epsilon_loss_weights(snr_gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ᾱ_t of the training schedule and the Min-SNR-γ weight of the epsilon loss per timestep."""
    alphas_cumprod = build_scheduler().alphas_cumprod.float()
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    return alphas_cumprod, torch.clamp(snr, max=snr_gamma) / snr


@torch.no_grad()
def update_ema(averages: list[torch.Tensor], parameters: list[torch.Tensor], step: int, max_decay: float) -> None:
    """One step of the weights' moving average, with the decay warmed up as min(max, (1 + step) / (10 + step))."""
    decay = min(max_decay, (1.0 + step) / (10.0 + step))
    for average, p in zip(averages, parameters):
        average.lerp_(p.detach(), 1.0 - decay)


def caption_ids(token_ids: torch.Tensor, caption_index: torch.Tensor, index: torch.Tensor, empty_index: int,
                dropout: float, generator: torch.Generator) -> torch.Tensor:
    """The token ids of the batch's captions (``index`` into the scenes), ``dropout`` of them the empty one."""
    drop = torch.rand(len(index), generator=generator) < dropout
    return token_ids[torch.where(drop, empty_index, caption_index[index])]


def optimizer_step(loss: torch.Tensor, optimizer, parameters: list[torch.Tensor]) -> None:
    """Backpropagate ``loss``, clip the gradients' norm to 1 and step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()


@torch.no_grad()
def keep_average(averages: list[torch.Tensor], parameters: list[torch.Tensor]) -> None:
    """Load the moving average into the weights (what is saved)."""
    for average, p in zip(averages, parameters):
        p.copy_(average)


def train_diffusion(unet, text_encoder, tokenizer, latents, captions, config, state, generator):
    """Epsilon-prediction training of UNet + text encoder on precomputed (scaled) latents."""
    alphas_cumprod, loss_weight = epsilon_loss_weights(config.snr_gamma)

    unique = sorted(set(captions))
    caption_index = torch.tensor([unique.index(c) for c in captions])
    token_ids = _tokenize(tokenizer, unique + [""])
    empty_index = len(unique)

    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.unet_lr, weight_decay=1e-2)
    if "unet_optimizer" in state:
        optimizer.load_state_dict(state["unet_optimizer"])
    ema = state.get("ema")
    if ema is None:
        ema = [p.detach().clone() for p in parameters]
    seconds = config.minutes * 60 * (1.0 - config.vae_share)
    if "unet_seconds" in state:
        seconds = state["unet_seconds"]
    state["unet_seconds"] = seconds
    phase = _Phase("unet", config.unet_steps, seconds, state, metric="loss", digits=4, history_digits=5,
                   checkpoint_minutes=config.checkpoint_minutes)
    unet.train()
    text_encoder.train()
    while not phase.done:
        for group in optimizer.param_groups:
            group["lr"] = config.unet_lr * lr_factor(phase.progress, warmup=0.02, floor=0.05)
        index = torch.randint(0, latents.shape[0], (config.unet_batch,), generator=generator)
        z0 = latents[index]
        ids = caption_ids(token_ids, caption_index, index, empty_index, config.caption_dropout, generator)
        timesteps = torch.randint(0, SCHEDULER_CONFIG["num_train_timesteps"], (config.unet_batch,),
                                  generator=generator)
        noise = torch.randn(z0.shape, generator=generator)
        alpha_prod_t = alphas_cumprod[timesteps][:, None, None, None]
        zt = alpha_prod_t.sqrt() * z0 + (1.0 - alpha_prod_t).sqrt() * noise
        hidden = text_encoder(ids)[0]
        eps = unet(zt, timesteps, hidden).sample
        per_sample = ((eps - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weight[timesteps]).mean()
        optimizer_step(loss, optimizer, parameters)
        phase.tick()
        update_ema(ema, parameters, phase.step, config.ema_decay)
        phase.record(per_sample.mean().item(), optimizer.param_groups[0]["lr"])
        if phase.checkpoint_due():
            state.update(unet_step=phase.step, unet_elapsed=phase.elapsed,
                         unet_optimizer=optimizer.state_dict(), ema=ema)
            _save_state(state, config, unet=unet, text_encoder=text_encoder, generator=generator)
    phase.bar.close()
    keep_average(ema, parameters)
    unet.eval()
    text_encoder.eval()
    state.update(unet_step=phase.step, unet_elapsed=phase.elapsed, unet_train_loss=phase.running)
    state.pop("unet_optimizer", None)
    state.pop("ema", None)
    return state


def _save_state(state: dict, config: TrainConfig, vae=None, unet=None, text_encoder=None,
                generator=None) -> None:
    if vae is not None:
        state["vae"] = vae.state_dict()
    if unet is not None:
        state["unet"] = unet.state_dict()
    if text_encoder is not None:
        state["text_encoder"] = text_encoder.state_dict()
    if generator is not None:
        state["generator"] = generator.get_state()
    state["config"] = {k: v for k, v in vars(config).items() if k != "resume"}
    os.makedirs(os.path.dirname(os.path.abspath(config.state)), exist_ok=True)
    temporary = config.state + ".tmp"
    torch.save(state, temporary)
    os.replace(temporary, config.state)


def check_out_folder(out: str, force: bool) -> None:
    """Fail before training when ``out`` is a file, or a non-empty folder and ``force`` is off."""
    if os.path.isfile(out):
        raise OutputError(f"--out {out} is a file; give a folder for the pipeline")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise OutputError(f"--out {out} already holds files; pass --force to replace it or choose another --out")


def _publish(folder: str, out: str) -> None:
    """Move the finished ``folder`` to ``out``, replacing an old ``out`` only once the new one is complete."""
    old = None
    if os.path.isdir(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old.", dir=os.path.dirname(folder))
        os.replace(out, os.path.join(old, "pipeline"))
    os.replace(folder, out)
    if old is not None:
        shutil.rmtree(old)


def save_beside(pipeline, out: str) -> str:
    """Save ``pipeline`` (safetensors, plus the slow tokenizer's files) to a new temporary folder beside ``out``."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.", dir=parent)
    pipeline.save_pretrained(folder, safe_serialization=True)
    write_slow_tokenizer_files(os.path.join(folder, "tokenizer"))
    return folder


def publish_with_log(folder: str, out: str, log: dict) -> None:
    """Write ``log`` as the saved pipeline's ``training_log.json`` and move ``folder`` to ``out``."""
    with open(os.path.join(folder, "training_log.json"), "w") as handle:
        json.dump(log, handle, indent=1)
    _publish(folder, os.path.abspath(out))
    _log(f"saved pipeline to {out}")


def train(config: TrainConfig) -> dict:
    """Run (or resume) training and save the pipeline to ``config.out``; returns the training log.

    The pipeline is written to a temporary folder beside ``config.out`` and moved into place at the
    end; an existing non-empty ``config.out`` is replaced only with ``config.force``.
    """
    check_out_folder(config.out, config.force)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    wall_start = time.monotonic()
    state: dict = {}
    if config.resume:
        if not os.path.exists(config.state):
            raise FileNotFoundError(f"--resume: no state file at {config.state}")
        state = torch.load(config.state, weights_only=False)
        _log(f"resuming from {config.state}: phase {state.get('phase')}")
    state.setdefault("phase", "vae")
    state.setdefault("wall_seconds_before", 0.0)
    generator = torch.Generator().manual_seed(config.seed)
    if "generator" in state:
        generator.set_state(state["generator"])

    tokenizer = build_tokenizer()
    vae = build_vae(config.seed)
    text_encoder = build_text_encoder(tokenizer, config.seed)
    unet = build_unet(config.seed)
    for name, module in (("vae", vae), ("unet", unet), ("text_encoder", text_encoder)):
        if name in state:
            module.load_state_dict(state[name])

    pixels, captions = render_dataset(sample_scenes(config.seed, config.n_train))
    if state["phase"] == "vae":
        state = train_vae(vae, pixels, config, state, generator)
        state["phase"] = "unet"
        _save_state(state, config, vae=vae, generator=generator)

    vae.eval()
    latents = encode_dataset(vae, pixels)
    scaling_factor = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    latents = latents * scaling_factor
    with torch.no_grad():
        check = slice(0, min(256, pixels.shape[0]))
        reconstruction = vae.decode(latents[check] / scaling_factor).sample
        train_psnr = batch_psnr(reconstruction, pixels[check])
    _log(f"VAE train-set PSNR {train_psnr:.2f} dB, scaling_factor {scaling_factor:.4f}")

    if state["phase"] == "unet":
        state = train_diffusion(unet, text_encoder, tokenizer, latents, captions, config, state,
                                generator)
        state["phase"] = "done"
        _save_state(state, config, vae=vae, unet=unet, text_encoder=text_encoder,
                    generator=generator)

    pipeline = build_pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=build_scheduler())
    folder = save_beside(pipeline, config.out)
    log = {
        "command": "python -m ddim_edit.toy.train " + " ".join(sys.argv[1:]),
        "budget_minutes": config.minutes,
        "vae_share": config.vae_share,
        "vae_lr": config.vae_lr,
        "kl_weight": config.kl_weight,
        "unet_lr": config.unet_lr,
        "train_seed": config.seed,
        "n_train_scenes": config.n_train,
        "vae_steps": state.get("vae_step"),
        "vae_minutes": round(state.get("vae_elapsed", 0.0) / 60, 2),
        "vae_batch": config.vae_batch,
        "vae_train_psnr_db": round(train_psnr, 2),
        "scaling_factor": scaling_factor,
        "unet_steps": state.get("unet_step"),
        "unet_minutes": round(state.get("unet_elapsed", 0.0) / 60, 2),
        "unet_batch": config.unet_batch,
        "unet_final_loss": state.get("unet_train_loss"),
        "caption_dropout": config.caption_dropout,
        "snr_gamma": config.snr_gamma,
        "ema_decay": config.ema_decay,
        "wall_minutes_this_run": round((time.monotonic() - wall_start) / 60, 2),
        "threads": config.threads,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "parameters": {
            "unet": count_parameters(unet),
            "vae": count_parameters(vae),
            "text_encoder": count_parameters(text_encoder),
        },
        "torch": torch.__version__,
        "vae_history": state.get("vae_history", []),
        "unet_history": state.get("unet_history", []),
    }
    publish_with_log(folder, config.out, log)
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output pipeline folder")
    parser.add_argument("--minutes", type=float, default=TrainConfig.minutes, help="wall-clock budget for both phases")
    parser.add_argument("--vae-share", type=float, default=TrainConfig.vae_share, help="share of --minutes for the VAE")
    parser.add_argument("--vae-steps", type=int, default=TrainConfig.vae_steps, help="fixed VAE steps (overrides time)")
    parser.add_argument("--unet-steps", type=int, default=TrainConfig.unet_steps,
                        help="fixed UNet steps (overrides time)")
    parser.add_argument("--n-train", type=int, default=TrainConfig.n_train, help="training scenes")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed, help="scene and weight seed")
    parser.add_argument("--threads", type=int, default=TrainConfig.threads,
                        help="torch threads (use 1 on a CPU shared with other jobs)")
    parser.add_argument("--state", default=TrainConfig.state, help="resumable state file")
    parser.add_argument("--checkpoint-minutes", type=float, default=TrainConfig.checkpoint_minutes)
    parser.add_argument("--resume", action="store_true", help="continue from --state")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    args = parser.parse_args(argv)
    config = TrainConfig(**vars(args))
    if not 0.0 < config.vae_share < 1.0:
        parser.error("--vae-share must be between 0 and 1")
    try:
        log = train(config)
    except (DdimEditError, FileNotFoundError) as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps({k: v for k, v in log.items() if not k.endswith("history")}, indent=1))


if __name__ == "__main__":
    main()

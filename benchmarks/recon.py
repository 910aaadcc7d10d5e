"""Inversion + reconstruction benchmark against diffusers' own DDIM inversion, in one run.

For each inversion method at each step count: reconstruction PSNR of the decoded image against the
source, the VAE round-trip PSNR (the ceiling), UNet evaluations, wall time, and the wall-time ratio
against diffusers' ``DDIMInverseScheduler`` + ``StableDiffusionPipeline`` doing the same invert +
reconstruct on the same model, same scenes, same guidance.

    python -m benchmarks.recon --model toy --steps 10 25 50 --n 5 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ddim_edit.bench import recon as recon_suite
from ddim_edit.bench.harness import BenchContext
from ddim_edit.images import to_tensor, to_uint8
from ddim_edit.metrics import psnr
from ddim_edit.model import load_model
from ddim_edit.toy.world import caption, render, sample_scenes

METHODS = ("ddim", "fixed-point", "negative-prompt", "exact", "null-text")


def diffusers_invert_reconstruct(pipe, pixels: np.ndarray, prompt: str, steps: int, guidance: float) -> np.ndarray:
    """The reference: diffusers' DDIMInverseScheduler loop, then the pipeline from the inverted latents."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    with torch.no_grad():
        latents = pipe.vae.encode(to_tensor(pixels) * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
        embeddings = pipe.encode_prompt(prompt, "cpu", 1, False)[0]
        inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
        inverse.set_timesteps(steps)
        for t in inverse.timesteps:
            noise = pipe.unet(latents, t, encoder_hidden_states=embeddings).sample
            latents = inverse.step(noise, t, latents).prev_sample
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        height, width = pixels.shape[:2]
        z0 = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, latents=latents, eta=0.0,
                  height=height, width=width, output_type="latent").images
        image = pipe.vae.decode(z0 / pipe.vae.config.scaling_factor).sample
    return to_uint8((image + 1) / 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--n", type=int, default=5, help="scenes per step count")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    model = load_model(args.model, device="cpu")
    path = "assets/toy-model" if args.model == "toy" else args.model
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    scenes = sample_scenes(args.seed, args.n)
    size = model.native_size
    warm = render(scenes[0], image_size=size)  # warm-up, untimed: first calls allocate and pick kernels
    diffusers_invert_reconstruct(pipe, warm, caption(scenes[0]), 2, args.guidance)
    list(recon_suite.run(BenchContext(model=model, steps=2, guidance=args.guidance, methods=("ddim",), quiet=True), scenes[:1]))
    results = {}
    rows = []
    for steps in args.steps:
        ctx = BenchContext(model=model, steps=steps, guidance=args.guidance, methods=tuple(args.methods), seed=args.seed,
                           n=args.n, quiet=True)
        reference = {"psnr": [], "seconds": []}
        ours: dict[str, dict[str, list[float]]] = {}
        for scene in scenes:  # reference and ours interleaved per scene, so load changes hit both alike
            pixels = render(scene, image_size=size)
            start = time.perf_counter()
            image = diffusers_invert_reconstruct(pipe, pixels, caption(scene), steps, args.guidance)
            reference["seconds"].append(time.perf_counter() - start)
            reference["psnr"].append(psnr(image, pixels))
            for result in recon_suite.run(ctx, [scene]):
                for metric, value in result.metrics.items():
                    ours.setdefault(result.variant, {}).setdefault(metric, []).append(value)
        reference_seconds = float(np.mean(reference["seconds"]))
        ceiling = float(np.mean(ours[args.methods[0]]["vae_psnr"]))
        rows.append((steps, "diffusers ddim (reference)", float(np.mean(reference["psnr"])), ceiling, steps + 2 * steps,
                     reference_seconds, 1.0))
        means = {method: {metric: float(np.mean(values)) for metric, values in metrics.items()} for method, metrics in ours.items()}
        for method, metrics in means.items():
            rows.append((steps, method, metrics["psnr"], metrics["vae_psnr"], metrics["unet_evals"], metrics["seconds"],
                         metrics["seconds"] / reference_seconds))
        results[steps] = {"reference": {"psnr": float(np.mean(reference["psnr"])), "seconds": reference_seconds},
                          "ours": means}
        print(f"done: {steps} steps", flush=True)
    header = f"{'steps':>5}  {'method':<27} {'PSNR dB':>8} {'VAE ceiling':>11} {'UNet evals':>10} {'s/image':>8} {'time ratio':>10}"
    print(f"\nrecon vs diffusers: model {args.model}, {args.n} scenes from seed {args.seed}, guidance {args.guidance}, "
          f"torch threads {torch.get_num_threads()}")
    print(header)
    for steps, method, score, ceiling, evals, seconds, ratio in rows:
        print(f"{steps:>5}  {method:<27} {score:8.2f} {ceiling:11.2f} {evals:10.0f} {seconds:8.3f} {ratio:10.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=2)
    return results


if __name__ == "__main__":
    main()

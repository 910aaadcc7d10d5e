"""``bench recon``: reconstruction PSNR of each inversion method vs the source and the VAE ceiling."""

from __future__ import annotations

import time
from typing import Iterator

from ..inversion import METHODS
from ..metrics import psnr
from ..toy.world import caption, render
from ..workflow import decode, invert_image, reconstruct_image
from .harness import BenchContext, SceneResult, prepared

SLOW_METHODS = ("fixed-point", "null-text")
"""Compared only when asked for (``--method``): many UNet evaluations per step, minutes per scene."""
DEFAULT_METHODS = tuple(method for method in METHODS if method not in SLOW_METHODS)
"""What ``bench recon`` compares by default: the methods of N + 2N UNet evaluations."""


def vae_round_trip(model, pixels):
    """decode(encode(x)): the best any inversion can reconstruct (uint8)."""
    from ..images import to_tensor

    return decode(model, model.encode_image(to_tensor(pixels)))


def run(ctx: BenchContext, scenes: list) -> Iterator[SceneResult]:
    """For each scene and each method in ``ctx.methods``: invert, reconstruct, score."""
    model = ctx.model
    schedule = ctx.schedule()
    size = model.native_size
    for index, scene in enumerate(scenes):
        source = render(scene, image_size=size)
        ceiling = psnr(vae_round_trip(model, source), source)
        for method in ctx.methods:
            options = ctx.inversion_options(method, **ctx.options.get("inversion", {}))
            before = model.unet_evaluations
            start = time.perf_counter()
            traj = invert_image(model, prepared(source, f"scene {index}"), caption(scene), schedule, options,
                                progress=ctx.progress)
            image = reconstruct_image(model, traj, progress=ctx.progress)
            seconds = time.perf_counter() - start
            score = psnr(image, source)
            metrics = {"psnr": score, "vae_psnr": ceiling, "gap_db": ceiling - score,
                       "unet_evals": model.unet_evaluations - before, "seconds": seconds}
            if method == "fixed-point":  # steps whose fixed point was not reached (the closest iterate kept)
                metrics["unconverged_steps"] = len(traj.metadata.get("fixed_point_unconverged") or [])
            yield SceneResult(index, method, metrics, [("source", source), (f"{method}", image)])

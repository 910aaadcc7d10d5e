"""``bench style``: content × style pairs of unseen toy scenes, scored against the ground truth.

Pair i takes scene i as the content and scene i + 1 (cyclically) as the style; the ground truth is
``render(style_truth(content, style))``: the content's shape and geometry drawn with the style's
colour, fill and background. Each scene is inverted once (the path ``style_images`` takes for an
image) and every variant runs :func:`ddim_edit.edits.style.style_images` (the function the CLI calls)
on the two trajectories.

Variants (``--set variants='[...]'``; default ``default``, ``styleid``, ``all-layers``, ``no-adain``, ``adain-only``):

- ``default``: the library's defaults (StyleID's, with γ 0 and the content's attention maps in the
  encoder's self-attention layers);
- ``styleid``: StyleID's defaults (γ 0.75, T 1.5, AdaIN, decoder self-attention but the
  lowest-resolution attention block, every step, no structure layers);
- ``query-only``: the previous release's default: StyleID with γ 0.5, no structure layers;
- ``all-layers``: injection into every decoder self-attention layer;
- ``no-adain``: injection without the initial-latent AdaIN;
- ``adain-only``: AdaIN of x_T, no attention injection;
- ``no-corrections``: ``styleid`` with the output branch sampled without the content's corrections;
- ``content``: the content's own reconstruction (no style at all: the floor);
- ``g<γ>-t<T>`` (e.g. ``g0.3-t1.5``): the defaults with that γ and T (for sweeps);
- any of the above with ``+all`` appended (``g0.3-t1.5+all``): the same on every decoder layer.

Metrics:

- ``iou``: silhouette read from the output vs the content's true silhouette (geometry kept);
  ``shift``: the distance in pixels between their centroids (the object moved, e.g. towards the
  style image's object, rather than changed shape);
- ``shape_ok``: the read shape is the content's; ``color_ok`` / ``fill_ok`` / ``background_ok``: the read
  attribute is the style's; ``all_ok``: all four;
- ``psnr``: PSNR against the ground-truth render;
- ``unet_evals``: UNet evaluations (batch items) of the transfer plus the inversion of both images
  (what ``ddim-edit style A.png B.png`` costs); ``seconds`` likewise;
- ``peak_mb``: peak memory above the level at the start of the transfer (CUDA: allocated; CPU:
  resident set size, reset through ``/proc/self/clear_refs``; NaN where neither can be read).

Suite options: ``variants``, ``method`` (``exact``), ``prompt`` (``empty`` as StyleID, or ``caption``:
each image inverted with its caption at the bench's guidance, as a default ``ddim-edit invert`` does),
``guidance`` (of the transfer; default 1 as StyleID; the bench's ``--guidance`` is the inversion's).
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import replace
from typing import Iterator

import torch

from ..edits.style import StyleOptions, style_images
from ..errors import DdimEditError
from ..metrics import centroid_shift, iou, psnr
from ..toy.reader import read_scene
from ..toy.world import Scene, caption, render, shape_mask, style_truth
from ..workflow import invert_image
from .harness import BenchContext, SceneResult, prepared

DEFAULT_VARIANTS = ("default", "styleid", "all-layers", "no-adain", "adain-only")
NAMED = {
    "default": StyleOptions(),
    "styleid": StyleOptions(gamma=0.75, structure_layers=()),
    "query-only": StyleOptions(gamma=0.5, structure_layers=()),
    "all-layers": StyleOptions(layers=("all",)),
    "no-adain": StyleOptions(adain=False),
    "adain-only": StyleOptions(injection_start=1.0),
    "no-corrections": StyleOptions(output_corrections="none"),
    "content": StyleOptions(injection_start=1.0, adain=False),
}
SWEEP = re.compile(r"^g(?P<gamma>[0-9.]+)-t(?P<temperature>[0-9.]+)$")


def variant_options(name: str) -> StyleOptions:
    """The :class:`StyleOptions` a variant name stands for."""
    base, _, suffix = name.partition("+")
    if suffix not in ("", "all"):
        raise DdimEditError(f"unknown variant suffix {suffix!r} in {name!r}; only '+all' is known")
    if base in NAMED:
        options = NAMED[base]
    elif (match := SWEEP.match(base)):
        options = StyleOptions(gamma=float(match["gamma"]), temperature=float(match["temperature"]))
    else:
        raise DdimEditError(f"unknown style variant {name!r}; use one of {', '.join(NAMED)} or g<γ>-t<T>")
    return replace(options, layers=("all",)) if suffix == "all" else options


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Measure the peak memory of the block above its starting level, in MiB (``record["peak_mb"]``)."""
    record = {"peak_mb": float("nan")}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield record
        torch.cuda.synchronize(device)
        record["peak_mb"] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    start = _rss_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as handle:  # resets VmHWM to the current RSS
            handle.write("5")
        resettable = start is not None
    except OSError:
        resettable = False
    yield record
    peak = _rss_kib("VmHWM")
    if resettable and peak is not None:
        record["peak_mb"] = max(0, peak - start) / 1024


def _invert(ctx: BenchContext, scene: Scene, index: int, schedule, prompt: str, method: str):
    start = time.perf_counter()
    traj = invert_image(ctx.model, prepared(render(scene, image_size=ctx.model.native_size), f"scene {index}"),
                        prompt, schedule, ctx.inversion_options(method, record_corrections=False),
                        progress=ctx.progress)
    return traj, time.perf_counter() - start


def score(output, content: Scene, style: Scene) -> dict[str, float]:
    """Attribute agreement and geometry of ``output`` against the pair's ground truth."""
    size = output.shape[0]
    truth = style_truth(content, style)
    read = read_scene(output)
    return {
        "iou": iou(read.mask, shape_mask(content, size)),
        "shift": centroid_shift(read.mask, shape_mask(content, size)),
        "shape_ok": float(read.shape == content.shape),
        "color_ok": float(read.color == truth.color),
        "fill_ok": float(read.fill == truth.fill),
        "background_ok": float(read.background == truth.background),
        "all_ok": float((read.shape, read.color, read.fill, read.background)
                        == (truth.shape, truth.color, truth.fill, truth.background)),
        "psnr": psnr(output, render(truth, image_size=size)),
    }


def run(ctx: BenchContext, scenes: list) -> Iterator[SceneResult]:
    """For each pair (scene i, scene i + 1) and each variant: style transfer, scored against the truth."""
    model = ctx.model
    options = ctx.options
    names = list(options.get("variants", DEFAULT_VARIANTS))
    variants = {name: variant_options(name) for name in names}
    method = options.get("method", "exact")
    prompt_mode = options.get("prompt", "empty")
    if prompt_mode not in ("empty", "caption"):
        raise DdimEditError(f"style suite: prompt must be 'empty' or 'caption', got {prompt_mode!r}")
    schedule = ctx.schedule()
    size = model.native_size
    inverted: dict[int, tuple] = {}

    def trajectory(index: int):
        if index not in inverted:
            scene = scenes[index]
            inverted[index] = _invert(ctx, scene, index, schedule, caption(scene) if prompt_mode == "caption" else "",
                                      method)
        return inverted[index]

    count = len(scenes)
    for index in range(count):
        style_index = (index + 1) % count
        content, style = scenes[index], scenes[style_index]
        (content_traj, content_seconds), (style_traj, style_seconds) = trajectory(index), trajectory(style_index)
        inversion_evals = content_traj.metadata["unet_evaluations"] + style_traj.metadata["unet_evaluations"]
        truth = render(style_truth(content, style), image_size=size)
        for name, variant in variants.items():
            variant = replace(variant, guidance_scale=options.get("guidance", variant.guidance_scale))
            start = time.perf_counter()
            with peak_memory(model.device) as memory:
                outcome = style_images(model, content_traj, style_traj, options=variant, progress=ctx.progress)
            seconds = time.perf_counter() - start
            image = outcome.content_reconstruction if name == "content" else outcome.output
            metrics = score(image, content, style)
            metrics.update(unet_evals=outcome.result.unet_evaluations + inversion_evals,
                           seconds=seconds + content_seconds + style_seconds, peak_mb=memory["peak_mb"])
            yield SceneResult(index, name, metrics, [("content", render(content, image_size=size)),
                                                     ("style", render(style, image_size=size)),
                                                     (name, image), ("truth", truth)])
        if index - 1 > 0:  # scene i - 1 is needed by no later pair (scene 0 is, by the last one)
            inverted.pop(index - 1, None)

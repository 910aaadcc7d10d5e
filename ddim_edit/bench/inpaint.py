"""``bench inpaint``: restore a corrupted region of unseen toy scenes; score against the original.

For every scene and every mask kind:

- ``shape``: a square inside the shape's silhouette (part of the shape);
- ``background``: a square in the background, away from the shape;
- ``boundary``: a square centred on a point of the shape's outline (shape, background and edge);

the masked pixels are corrupted (flat gray on even scenes, uniform noise on odd ones; noise where the
background itself is gray), the *corrupted* image is inverted (that is what a user has) and
:func:`ddim_edit.edits.inpaint.inpaint` (the function the CLI calls) restores it with the source
caption, once per variant:

- ``shared``: known region from the inverted trajectory, the hole starting from its x_T;
- ``shared-freshhole``: the same, but the hole starts from fresh noise (the inverted x_T of a damaged
  region keeps the damage's layout);
- ``bld``: known region from z_0 noised with fresh noise each step (Blended Latent Diffusion);
- ``repaint``: ``shared`` with RePaint resampling (``resample`` passes per ``jump_length`` steps);
- ``corrupted``: the input itself, unedited (the floor every method must beat).

Metrics (the ground truth is the uncorrupted render):

- ``psnr_mask``: PSNR inside the mask;
- ``reader_ok``: 1 when the attribute reader reads the same shape, colour, fill and background from
  the result as from the original;
- ``seam_err``: mean |∇result − ∇original| (forward differences, 0–255 units) over the seam band, from
  1 px inside the mask to 1 px beyond the paste's feather; 0 = no edge that the original lacks;
- ``unet_evals``: UNet evaluations (batch items) including the inversion the variant needs (none for
  ``bld``, which only needs z_0); ``seconds``: wall time, inversion included likewise.

Variant names are ``<variant>`` (every mask kind) and ``<variant>@<kind>``.
Suite options (``--set key=value``): ``resample`` (2), ``jump_length`` (5), ``start_step`` (0),
``feather`` (None: one latent cell), ``dilate`` (0), ``kinds`` (all three), ``variants`` (all), ``method`` (``ddim``: the
blend never uses exact-inversion corrections, so ``exact`` would cost 2N more evaluations for the
same latents).
"""

from __future__ import annotations

import math
import time
from typing import Iterator

import cv2
import numpy as np

from ..edits.inpaint import InpaintOptions, inpaint
from ..errors import DdimEditError
from ..masks import MaskOptions, prepare_mask
from ..metrics import psnr
from ..toy.reader import read_scene
from ..toy.world import Scene, caption, render, shape_mask
from ..workflow import invert_image
from .harness import BenchContext, SceneResult, prepared

MASK_KINDS = ("shape", "background", "boundary")


def _square(center: tuple[int, int], half: int, size: int) -> np.ndarray:
    cy, cx = (int(np.clip(c, half, size - half)) for c in center)
    mask = np.zeros((size, size), bool)
    mask[cy - half:cy + half, cx - half:cx + half] = True
    return mask


def scene_mask(scene: Scene, kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A square mask of ``kind`` for ``scene`` at ``size`` px (bool [size, size])."""
    silhouette = shape_mask(scene, size).astype(np.uint8)
    scale = size / 64
    if kind == "shape":  # the innermost point of the silhouette; the largest square that fits (≤ 16 px)
        inside = cv2.distanceTransform(silhouette, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        cy, cx = np.unravel_index(int(np.argmax(inside)), inside.shape)
        half = int(np.clip(math.floor(inside[cy, cx] / math.sqrt(2)) - 1, 3 * scale, 8 * scale))
        return _square((cy, cx), half, size) & silhouette.astype(bool)
    if kind == "background":  # the background point farthest from the shape, inside the image
        padded = np.pad(1 - silhouette, 1)  # the image border counts as an obstacle too
        outside = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        cy, cx = np.unravel_index(int(np.argmax(outside)), outside.shape)
        half = int(np.clip(math.floor(outside[cy, cx] / math.sqrt(2)) - 1, 3 * scale, 7 * scale))
        return _square((cy, cx), half, size) & ~silhouette.astype(bool)
    if kind == "boundary":  # a random point of the outline
        contours, _ = cv2.findContours(silhouette, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        points = max(contours, key=cv2.contourArea)[:, 0]
        x, y = points[int(rng.integers(len(points)))]
        return _square((y, x), int(7 * scale), size)
    raise ValueError(f"unknown mask kind {kind!r}; choose from {MASK_KINDS}")


def corrupt(image: np.ndarray, mask: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """The image with its masked pixels replaced by flat gray or uniform noise."""
    out = image.copy()
    if style == "gray":
        out[mask] = 128
    else:
        out[mask] = rng.integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
    return out


def seam_band(binary: np.ndarray, feather: int) -> np.ndarray:
    """Pixels from 1 px inside the mask to 1 px beyond the feather: where a paste seam can show."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    inner = cv2.erode(binary.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    reach = feather + 1
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    outer = cv2.dilate(binary.astype(np.uint8), grow)
    return outer.astype(bool) & ~inner.astype(bool)


def seam_error(result: np.ndarray, original: np.ndarray, band: np.ndarray) -> float:
    """Mean |∇result − ∇original| over neighbour pairs inside ``band`` (0–255 units, RGB averaged)."""
    a, b = result.astype(np.float64), original.astype(np.float64)
    errors = []
    for axis in (0, 1):
        grad_a, grad_b = np.diff(a, axis=axis), np.diff(b, axis=axis)
        pairs = band[1:, :] & band[:-1, :] if axis == 0 else band[:, 1:] & band[:, :-1]
        errors.append(np.abs(grad_a - grad_b)[pairs])
    joined = np.concatenate(errors)
    return float(joined.mean()) if joined.size else float("nan")


def reader_agrees(image: np.ndarray, original_attributes: dict) -> float:
    return float(read_scene(image).attributes() == original_attributes)


def run(ctx: BenchContext, scenes: list) -> Iterator[SceneResult]:
    """Corrupt, invert and restore each scene under each mask kind; score every variant."""
    model = ctx.model
    schedule = ctx.schedule()
    size = model.native_size
    opts = ctx.options
    kinds = tuple(opts.get("kinds", MASK_KINDS))
    method = opts.get("method", "ddim")
    base = dict(start_step=float(opts.get("start_step", 0.0)), guidance_scale=ctx.guidance)
    variants = {
        "shared": InpaintOptions(known="shared", **base),
        "shared-freshhole": InpaintOptions(known="shared", hole_start="fresh", **base),
        "bld": InpaintOptions(known="fresh", **base),
        "repaint": InpaintOptions(known="shared", resample=int(opts.get("resample", 2)),
                                  jump_length=int(opts.get("jump_length", 5)), **base),
    }
    chosen = opts.get("variants")
    if chosen:
        unknown = sorted(set(chosen) - set(variants))
        if unknown:
            raise DdimEditError(f"unknown inpaint variants {unknown}; choose from {sorted(variants)}")
        variants = {name: variants[name] for name in chosen}
    mask_options = MaskOptions(dilate=int(opts.get("dilate", 0)), feather=opts.get("feather"))
    for index, scene in enumerate(scenes):
        rng = np.random.default_rng([ctx.seed, index])
        original = render(scene, image_size=size)
        truth = read_scene(original).attributes()
        style = "noise" if index % 2 or scene.background == "gray" else "gray"
        per_kind: list[tuple[str, dict[str, dict[str, float]], list]] = []
        for kind in kinds:
            mask = scene_mask(scene, kind, size, rng)
            damaged = corrupt(original, mask, style, rng)
            prepared_mask = prepare_mask(mask, (size, size), model.vae_scale_factor, mask_options)
            band = seam_band(prepared_mask.binary, prepared_mask.feather)
            before, start = model.unet_evaluations, time.perf_counter()
            traj = invert_image(model, prepared(damaged, f"scene {index} {kind}"), caption(scene), schedule,
                                ctx.inversion_options(method), progress=ctx.progress)
            inversion_evals, inversion_seconds = model.unet_evaluations - before, time.perf_counter() - start
            scores = {"corrupted": {"psnr_mask": psnr(damaged, original, mask),
                                    "reader_ok": reader_agrees(damaged, truth),
                                    "seam_err": seam_error(damaged, original, band),
                                    "unet_evals": 0.0, "seconds": 0.0}}
            panels = [("original", original), (f"{style} hole", damaged)]
            for name, options in variants.items():
                result = inpaint(model, traj, damaged, prepared_mask, options, progress=ctx.progress)
                needs_trajectory = options.known == "shared"
                scores[name] = {
                    "psnr_mask": psnr(result.image, original, mask),
                    "reader_ok": reader_agrees(result.image, truth),
                    "seam_err": seam_error(result.image, original, band),
                    "unet_evals": result.info["unet_evaluations"] + (inversion_evals if needs_trajectory else 0),
                    "seconds": result.info["seconds"] + (inversion_seconds if needs_trajectory else 0.0),
                }
                panels.append((name, result.image))
            per_kind.append((kind, scores, panels))
        for kind, scores, _ in per_kind:
            for name, metrics in scores.items():
                yield SceneResult(index, name, metrics)
        for kind, scores, panels in per_kind:
            for name, metrics in scores.items():
                yield SceneResult(index, f"{name}@{kind}", metrics, panels if name == "shared" else [])

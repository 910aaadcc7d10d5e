"""``bench swap``: prompt-to-prompt edits of toy scenes scored against the ground-truth edit.

Each scene gets one swap, cycling colour → shape → fill → background, with a new value drawn from a
generator seeded by the bench seed and the scene index. Ground truth: ``render(with_changes(scene, …))``
(same geometry). Each inversion method in ``ctx.methods`` inverts the scene with its caption and edits
it through :func:`ddim_edit.edits.prompt_swap.swap`, the function ``ddim-edit swap`` calls; the method
``flowedit`` edits the scene's latents through :func:`ddim_edit.edits.flowedit.flowedit` instead (no
inversion; its settings from ``--set flowedit='{"n_max": 33}'``, its noises seeded by the bench seed
and the scene index).

Metrics per variant (inversion method):

- ``target_acc``: the changed attribute read back from the edit equals the target value;
- ``others_kept``: fraction of the three unchanged attributes read back unchanged;
- ``iou``: the read silhouette against the ground-truth shape mask; ``shift``: the distance in pixels
  between their centroids (a displaced object rather than a misshapen one);
- ``psnr``: the edit against the ground-truth image; ``bg_psnr``: the same outside both shapes
  (source and target silhouettes); ``far_bg_psnr``: outside both shapes grown by ``FAR`` pixels (at
  64 px; scaled with the size), i.e. without the ring where a moved or resized outline counts as
  background error; capped at ``PSNR_CAP`` dB so that an exact match does not make the mean infinite;
- ``edit_evals`` / ``inversion_evals``: UNet batch items; ``seconds``: inversion + edit.

``<kind>_acc`` is the target attribute per kind. With the suite option ``by_kind`` (``--set
by_kind=true``) ``<kind>_others_kept``, ``<kind>_iou``, ``<kind>_bg_psnr`` and ``<kind>_far_bg_psnr``
are added, to tell which kind of swap limits the means.
"""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np

import torch

from ..edits.flowedit import FLOWEDIT, FlowEditOptions, branch_conditioning, flowedit
from ..edits.prompt_swap import SwapOptions, edited_image, swap
from ..images import to_tensor
from ..metrics import centroid_shift, iou, psnr
from ..toy.reader import read_scene
from ..toy.world import BACKGROUNDS, COLORS, FILLS, SHAPES, Scene, caption, render, shape_mask, with_changes
from ..workflow import decode, invert_image
from .harness import BenchContext, SceneResult, prepared

KINDS = ("color", "shape", "fill", "background")
FAR = 4  # pixels at 64 px
PSNR_CAP = 60.0
BY_KIND = ("others_kept", "iou", "bg_psnr", "far_bg_psnr")  # also reported per kind with the option ``by_kind``
EDIT_METHODS = (FLOWEDIT,)
"""Methods of this suite that are not inversion methods."""
_VALUES = {"color": tuple(COLORS), "shape": SHAPES, "fill": FILLS, "background": tuple(BACKGROUNDS)}


def pick_swap(scene: Scene, index: int, seed: int) -> tuple[str, str, Scene]:
    """The attribute to change for scene ``index``, its new value and the ground-truth scene."""
    kind = KINDS[index % len(KINDS)]
    rng = np.random.default_rng([seed, index])
    choices = [value for value in _VALUES[kind] if value != getattr(scene, kind)]
    for position in rng.permutation(len(choices)):
        try:
            return kind, choices[position], with_changes(scene, **{kind: choices[position]})
        except ValueError:  # colour too close to the background: try the next value
            continue
    raise ValueError(f"no valid {kind} swap for {scene}")


def swap_options(ctx: BenchContext) -> SwapOptions:
    """The CLI's defaults (blend on the words that differ), overridable through ``ctx.options["swap"]``.

    ``blend: false`` turns the local blend off, as ``--no-blend`` does.
    """
    settings = dict(ctx.options.get("swap", {}))
    if not settings.pop("blend", True):
        settings["blend_words"] = ()
    elif "blend_words" in settings:
        settings["blend_words"] = tuple(settings["blend_words"])
    return SwapOptions(**settings)


def score(edit: np.ndarray, kind: str, scene: Scene, truth: Scene) -> dict[str, float]:
    size = edit.shape[0]
    read = read_scene(edit)
    others = [name for name in KINDS if name != kind]
    truth_image = render(truth, image_size=size)
    outside = ~(shape_mask(scene, size) | shape_mask(truth, size))
    far = far_from(~outside, round(FAR * size / 64))
    return {
        "target_acc": float(getattr(read, kind) == getattr(truth, kind)),
        "others_kept": float(np.mean([getattr(read, name) == getattr(truth, name) for name in others])),
        "iou": iou(read.mask, shape_mask(truth, size)),
        "shift": centroid_shift(read.mask, shape_mask(truth, size)),
        "psnr": psnr(edit, truth_image),
        "bg_psnr": psnr(edit, truth_image, mask=outside),
        "far_bg_psnr": min(psnr(edit, truth_image, mask=far), PSNR_CAP),
    }


def far_from(region: np.ndarray, radius: int) -> np.ndarray:
    """Pixels farther than ``radius`` (Chebyshev distance) from ``region`` (bool [H, W])."""
    import cv2

    grown = cv2.dilate(region.astype(np.uint8), np.ones((2 * radius + 1, 2 * radius + 1), np.uint8))
    return grown == 0


def flowedit_swap(ctx: BenchContext, schedule, source_image: np.ndarray, source_prompt: str, target_prompt: str,
                  index: int) -> tuple[np.ndarray, list, int, int]:
    """FlowEdit of the scene's latents, as ``ddim-edit swap --method flowedit`` runs it: (edit, extra
    panels, edit evaluations, inversion evaluations)."""
    model = ctx.model
    branches = [branch_conditioning(model, prompt) for prompt in (source_prompt, target_prompt)]
    generator = torch.Generator().manual_seed(ctx.seed * 100_003 + index)
    result = flowedit(model, schedule, model.encode_image(to_tensor(source_image)), *branches,
                      FlowEditOptions(**ctx.options.get("flowedit", {})), generator, progress=ctx.progress)
    return decode(model, result.latents), [], result.unet_evaluations, 0


def p2p_swap(ctx: BenchContext, schedule, method: str, source_image: np.ndarray, source_prompt: str,
             target_prompt: str, index: int) -> tuple[np.ndarray, list, int, int]:
    """Invert the scene with ``method`` and edit it with prompt-to-prompt, as ``ddim-edit swap`` does:
    (edit, the reconstruction panel, edit evaluations, inversion evaluations)."""
    model = ctx.model
    options = ctx.inversion_options(method, **{"record_corrections": False, **ctx.options.get("inversion", {})})
    before = model.unet_evaluations
    traj = invert_image(model, prepared(source_image, f"scene {index}"), source_prompt, schedule, options,
                        progress=ctx.progress)
    inversion_evals = model.unet_evaluations - before
    swap_settings = swap_options(ctx)
    result = swap(model, traj, target_prompt, swap_settings, progress=ctx.progress)
    edit = edited_image(model, result, source_image, swap_settings)
    panels = [("reconstruction", decode(model, result.source_latents))]
    return edit, panels, result.unet_evaluations, inversion_evals


def run(ctx: BenchContext, scenes: list) -> Iterator[SceneResult]:
    """For each scene and each method in ``ctx.methods``: swap one attribute (inverting first, except
    for FlowEdit), score."""
    schedule = ctx.schedule()
    size = ctx.model.native_size
    for index, scene in enumerate(scenes):
        kind, new, truth = pick_swap(scene, index, ctx.seed)
        old = getattr(scene, kind)
        source_image = render(scene, image_size=size)
        for method in ctx.methods:
            start = time.perf_counter()
            edit, panels, edit_evals, inversion_evals = (
                flowedit_swap(ctx, schedule, source_image, caption(scene), caption(truth), index) if method == FLOWEDIT
                else p2p_swap(ctx, schedule, method, source_image, caption(scene), caption(truth), index))
            seconds = time.perf_counter() - start
            metrics = score(edit, kind, scene, truth)
            metrics.update({f"{kind}_acc": metrics["target_acc"], "edit_evals": edit_evals,
                            "inversion_evals": inversion_evals, "seconds": seconds})
            if ctx.options.get("by_kind"):
                metrics.update({f"{kind}_{name}": metrics[name] for name in BY_KIND})
            panels = [("source", source_image), *panels, (f"{method}: {old}->{new}", edit),
                      ("truth", render(truth, image_size=size))]
            yield SceneResult(index, method, metrics, panels)


def tables(summary: dict) -> list[str]:
    """With ``by_kind``: one row per variant and kind of swap (its target accuracy and ``BY_KIND`` means)."""
    if not summary["options"].get("by_kind"):
        return []
    columns = ("acc", *BY_KIND)
    lines = ["per kind of swap:", "  ".join(["variant   ", "kind      ", *(f"{name:<11}" for name in columns)])]
    for variant, values in summary["variants"].items():
        for kind in KINDS:
            if f"{kind}_acc" in values:
                cells = [f"{values.get(f'{kind}_{name}', float('nan')):<11.3f}" for name in columns]
                lines.append("  ".join([f"{variant:<10}", f"{kind:<10}", *cells]))
    return ["\n".join(lines)]

"""Prompt swap: prompt-to-prompt editing of an inverted image (Hertz et al.; PnP Inversion, Ju et al.).

Two branches run through the one DDIM sampler from the trajectory's x_T:

- the **source** branch replays the trajectory with the source prompt (for ``exact`` trajectories its
  latents are the recorded ones, so the edit starts from an exact reconstruction);
- the **target** branch samples the target prompt and borrows the source branch's cross-attention
  (replace / refine / reweight) and self-attention for a fraction of the steps
  (:mod:`ddim_edit.edits.p2p_control`); with a local blend, its latents outside the mask of the chosen
  words follow the source branch.

UNet evaluations: a plain replay costs 4 batch items per step (source and target, each with a
conditional and an unconditional half). With an ``exact`` trajectory the source latents are known at
every step, so the source branch needs neither its unconditional half nor its guided output: only its
conditional half runs, and only at the steps where the target borrows from it — 3 items per step at
most, 2 after the injection window when no blend is asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..attention import installed_processors
from ..errors import PromptError, TrajectoryError
from ..replay import replay_plan
from ..sampler import SamplerHook, StepInfo, sample
from ..trajectory import Trajectory
from .p2p_control import (
    AttentionController,
    AttentionEditSpec,
    BranchLayout,
    make_processors,
    refine_map,
    replace_map,
    token_positions,
)

MODES = ("replace", "refine")


@dataclass(frozen=True)
class SwapOptions:
    """Settings of :func:`swap`.

    Defaults were tuned on toy scenes from seed 77 (the bench reports seed 1000): cross 0.4 / self 0.6
    (PnP Inversion's PIE-Bench setting), blend threshold 0.5 without dilation, and the exact
    corrections on the source branch only (adding them to the target too lowered target-attribute
    accuracy and shape IoU there).

    Attributes:
        mode: ``replace`` (word swap, same token count) or ``refine`` (words added or removed).
        cross_steps: fraction of the steps with cross-attention injection; a dict gives it per target
            word, with the key ``"default"`` for the other tokens.
        self_steps: fraction of the steps with self-attention injection.
        reweight: target word → scale of its attention (prompt-to-prompt's equaliser).
        blend_words: words (of either prompt) whose cross-attention maps make the local-blend mask;
            empty: no blend.
        blend_threshold: the mask keeps latent pixels above this fraction of the way from the map's
            minimum to its maximum.
        blend_start: the blend is applied from this fraction of the steps on.
        blend_dilation: max-pool radius (latent pixels) applied to the maps before thresholding.
        blend_min_side: cross-attention layers with a spatial side below this do not vote
            (None: a quarter of the latent side).
        correct_target: add an ``exact`` trajectory's corrections to the target branch too
            (PnP Inversion adds them to the source branch only; with them on both branches a target
            prompt equal to the source reproduces the reconstruction exactly).
        reuse_source: for ``exact`` trajectories, take the source latents from the trajectory
            instead of recomputing them (same result, fewer UNet evaluations).
        keep_maps: accumulate every token's cross-attention map (for attention pictures).
        self_max_tokens: self-attention layers with more queries than this are not injected.
    """

    mode: str = "replace"
    cross_steps: float | dict[str, float] = 0.4
    self_steps: float = 0.6
    reweight: dict[str, float] = field(default_factory=dict)
    blend_words: tuple[str, ...] = ()
    blend_threshold: float = 0.5
    blend_start: float = 0.2
    blend_dilation: int = 0
    blend_min_side: int | None = None
    correct_target: bool = False
    reuse_source: bool = True
    keep_maps: bool = False
    self_max_tokens: int = 32 ** 2


@dataclass
class SwapResult:
    """The outcome of :func:`swap`.

    Attributes:
        source_latents: z_0 of the source branch (the reconstruction), [1, C, h, w].
        target_latents: z_0 of the edit, [1, C, h, w].
        unet_evaluations: UNet batch items the edit used (inversion not included).
        blend_mask: the last local-blend mask, [h, w] bool (None without blend).
        attention_maps: per branch, per token (in prompt order) the map averaged over steps and
            layers, [h, w] in [0, 1] (only with ``keep_maps``).
        tokens: per branch, the prompt's tokens.
    """

    source_latents: torch.Tensor
    target_latents: torch.Tensor
    unet_evaluations: int
    blend_mask: torch.Tensor | None = None
    attention_maps: dict[str, list[torch.Tensor]] | None = None
    tokens: dict[str, list[str]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- checks


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise PromptError(f"{name} must be a fraction of the steps in [0, 1], got {value}")


def _positions_or_fail(model, prompt: str, word: str, what: str) -> list[int]:
    positions = token_positions(model, prompt, word)
    if not positions:
        words = " ".join(prompt.split())
        raise PromptError(f"{what} word {word!r} is not in the target prompt {prompt!r}; choose one of: {words}")
    return positions


def build_spec(model, source: str, target: str, options: SwapOptions, length: int) -> AttentionEditSpec:
    """The attention edit for ``source`` → ``target`` (token map, per-token steps, reweighting).

    Raises:
        PromptError: for an unknown mode, fractions outside [0, 1], replace with different token
            counts, or a reweight / per-word step word that is not in the target prompt.
    """
    if options.mode not in MODES:
        raise PromptError(f"unknown swap mode {options.mode!r}; choose replace or refine")
    tokens = (replace_map if options.mode == "replace" else refine_map)(model, source, target, length)
    per_word = options.cross_steps if isinstance(options.cross_steps, dict) else {"default": options.cross_steps}
    default = float(per_word.get("default", SwapOptions.cross_steps))
    _check_fraction("--cross-steps", default)
    cross_steps = torch.full((length,), default)
    for word, fraction in per_word.items():
        if word == "default":
            continue
        _check_fraction(f"--cross-steps for {word!r}", fraction)
        cross_steps[_positions_or_fail(model, target, word, "cross-steps")] = float(fraction)
    _check_fraction("--self-steps", options.self_steps)
    reweight = torch.ones(length)
    for word, scale in options.reweight.items():
        reweight[_positions_or_fail(model, target, word, "reweight")] = float(scale)
    return AttentionEditSpec(tokens, cross_steps, float(options.self_steps), reweight, options.self_max_tokens)


def blend_positions(model, source: str, target: str, words: tuple[str, ...]) -> dict[str, list[int]]:
    """Token positions of the blend words in each prompt.

    Raises:
        PromptError: when a blend word is in neither prompt.
    """
    positions: dict[str, list[int]] = {"source": [], "target": []}
    for word in words:
        in_source, in_target = token_positions(model, source, word), token_positions(model, target, word)
        if not in_source and not in_target:
            raise PromptError(f"blend word {word!r} is in neither prompt ({source!r} / {target!r}); "
                              "pick a word of the source or target prompt")
        positions["source"] += in_source
        positions["target"] += in_target
    return {branch: sorted(set(found)) for branch, found in positions.items()}


# ----------------------------------------------------------------------------- sampler pieces


class BranchDenoiser:
    """``denoise`` for the [source, target] batch with attention control.

    Builds the UNet batch row by row (so the source's unconditional half can be left out when the
    source latents are known), tells the controller which rows are the source and target conditional
    halves, and applies classifier-free guidance per branch.
    """

    def __init__(self, model, controller: AttentionController, source_known: bool):
        self.model = model
        self.controller = controller
        self.source_known = source_known

    def denoise(self, latents, timestep, cond, uncond, guidance_scale):
        guided = guidance_scale > 1.0
        if guided and uncond is None:
            raise PromptError("guidance > 1 needs negative/null embeddings")
        rows: list[tuple[str, int, torch.Tensor]] = []  # (role, branch, embedding)
        if not self.source_known:
            if guided:
                rows += [("uncond", 0, uncond[0]), ("uncond", 1, uncond[1])]
            rows += [("cond", 0, cond[0]), ("cond", 1, cond[1])]
        else:
            if guided:
                rows.append(("uncond", 1, uncond[1]))
            if self.controller.needs_source:
                rows.append(("cond", 0, cond[0]))
            rows.append(("cond", 1, cond[1]))
        index = {(role, branch): k for k, (role, branch, _) in enumerate(rows)}
        source_row, target_row = index.get(("cond", 0)), index[("cond", 1)]
        layout = BranchLayout([], [], {"target": target_row})
        if source_row is not None:
            layout = BranchLayout([source_row], [target_row], {"source": source_row, "target": target_row})
        batch = torch.stack([latents[branch] for _, branch, _ in rows])
        embeddings = torch.stack([embedding for _, _, embedding in rows])
        self.controller.layout = layout
        try:
            output = self.model.denoise(batch, timestep, embeddings, None, 1.0)
        finally:
            self.controller.layout = None

        def branch_output(branch: int) -> torch.Tensor:
            out_cond = output[index[("cond", branch)]]
            if not guided:
                return out_cond
            out_uncond = output[index[("uncond", branch)]]
            return out_uncond + guidance_scale * (out_cond - out_uncond)

        target = branch_output(1)
        # Known source latents: its output is not needed (the hook puts the recorded latents back).
        source = target if self.source_known else branch_output(0)
        return torch.stack([source, target])


class SwapHook(SamplerHook):
    """Sets the controller's step; after each step restores known source latents and blends."""

    def __init__(self, controller: AttentionController, options: SwapOptions, known_latents: torch.Tensor | None,
                 blend: bool):
        self.controller = controller
        self.options = options
        self.known_latents = known_latents
        self.blend = blend
        self.mask: torch.Tensor | None = None

    def before_step(self, step: StepInfo, latents: torch.Tensor) -> None:
        self.controller.begin_step(step.index, step.fraction)

    def after_step(self, step: StepInfo, latents: torch.Tensor) -> torch.Tensor:
        source, target = latents[0], latents[1]
        if self.known_latents is not None:
            source = self.known_latents[step.index + 1].to(latents)
        if self.blend and step.fraction >= self.options.blend_start:
            mask = self.blend_mask(step.index, latents.shape[-1])
            if mask is not None:
                self.mask = mask
                target = source + mask.to(latents) * (target - source)
        return torch.stack([source, target])

    def blend_mask(self, index: int, side: int) -> torch.Tensor | None:
        """Union over branches of the thresholded, dilated word maps at step ``index``: [h, w]."""
        maps = self.controller.word_maps(index, side)
        if not maps:
            return None
        radius = self.options.blend_dilation
        union = torch.zeros(side, side, dtype=torch.bool)
        for word_map in maps.values():
            image = word_map[None, None]
            if radius > 0:
                image = F.max_pool2d(image, 2 * radius + 1, stride=1, padding=radius)
            image = image[0, 0] - image.min()
            union |= (image / image.max().clamp_min(1e-12) > self.options.blend_threshold).cpu()
        return union


# ----------------------------------------------------------------------------- the edit


def swap(
    model,
    traj: Trajectory,
    target_prompt: str,
    options: SwapOptions = SwapOptions(),
    source_prompt: str | None = None,
    guidance_scale: float | None = None,
    progress: bool = True,
) -> SwapResult:
    """Prompt-to-prompt edit of the image that ``traj`` inverts: source prompt → ``target_prompt``.

    Args:
        model: an :class:`~ddim_edit.model.EditModel`.
        traj: the image's trajectory (any inversion method).
        target_prompt: the edited caption.
        options: attention control and blend settings.
        source_prompt: when given, must equal the trajectory's prompt.
        guidance_scale: guidance (default: the trajectory's; ``exact``/``null-text`` need that one).
        progress: progress bar on stderr.

    Raises:
        PromptError: empty target prompt, replace with different token counts, unknown blend or
            reweight words, fractions outside [0, 1].
        TrajectoryError: source prompt different from the trajectory's, trajectory not for this model.
    """
    source = traj.metadata["prompt"]
    if source_prompt is not None and source_prompt.strip() != source:
        raise TrajectoryError(f"the source prompt {source_prompt!r} differs from the trajectory's {source!r}; "
                              "pass the trajectory's prompt or invert the image again with yours")
    if target_prompt is None or not target_prompt.strip():
        raise PromptError('the target prompt is empty; pass --target "…" describing the edited image')
    target = target_prompt.strip()
    length = model.tokenizer.model_max_length
    spec = build_spec(model, source, target, options, length)
    blend_words = tuple(options.blend_words)
    map_tokens = blend_positions(model, source, target, blend_words) if blend_words else {}
    _check_fraction("--blend-threshold", options.blend_threshold)
    plan = replay_plan(model, traj, [source, target], guidance_scale)
    side = traj.x_T.shape[-1]
    min_side = options.blend_min_side or max(1, side // 4)
    controller = AttentionController(spec, map_tokens, min_side, options.keep_maps)
    source_known = options.reuse_source and traj.method == "exact"
    known = traj.latents.to(model.device) if source_known else None
    corrections = plan.corrections
    if corrections is not None and not options.correct_target:
        corrections = torch.cat([corrections, torch.zeros_like(corrections)], dim=1)
    hook = SwapHook(controller, options, known, blend=bool(blend_words))
    denoiser = BranchDenoiser(model, controller, source_known)
    before = model.unet_evaluations
    with torch.no_grad(), installed_processors(model.unet, make_processors(model.unet, controller)):
        latents = sample(denoiser, plan.schedule, plan.x_T.clone(), plan.conditioning, plan.guidance_scale,
                         corrections=corrections, hooks=[hook], progress=progress, desc="swapping")
    evaluations = model.unet_evaluations - before
    tokens = {"source": model.prompt_tokens(source), "target": model.prompt_tokens(target)}
    maps = _average_maps(controller, tokens, side) if options.keep_maps else None
    return SwapResult(latents[:1], latents[1:], evaluations, hook.mask, maps, tokens)


def _average_maps(controller: AttentionController, tokens: dict[str, list[str]], side: int) -> dict[str, list[torch.Tensor]]:
    """Per branch and prompt token, the accumulated map averaged over layers, [side, side] in [0, 1]."""
    result: dict[str, list[torch.Tensor]] = {}
    for branch, words in tokens.items():
        layers = []
        for per_branch in controller.accumulated.values():
            if branch not in per_branch:
                continue
            maps = per_branch[branch]  # [queries, L]
            layer_side = int(round(maps.shape[0] ** 0.5))
            image = maps.T.reshape(-1, 1, layer_side, layer_side)
            layers.append(F.interpolate(image, size=(side, side), mode="bilinear", align_corners=False)[:, 0])
        if not layers:
            continue
        mean = torch.stack(layers).mean(0)
        result[branch] = []
        for position in range(1, len(words) + 1):
            heat = mean[position]
            heat = heat - heat.min()
            result[branch].append(heat / heat.max().clamp_min(1e-12))
    return result


def attention_picture(result: SwapResult, images: dict[str, np.ndarray]) -> np.ndarray:
    """A grid of per-token heat maps over each branch's image: one row per branch, uint8 RGB."""
    import cv2

    from ..images import grid

    if not result.attention_maps:
        raise PromptError("no attention maps were kept; run the swap with keep_maps=True")
    rows = []
    for branch, maps in result.attention_maps.items():
        image = images[branch]
        height, width = image.shape[:2]
        tiles, labels = [image], [branch]
        for token, heat in zip(result.tokens[branch], maps):
            heat = cv2.resize(heat.numpy().astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
            colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
            tiles.append((0.5 * image + 0.5 * colour).astype(np.uint8))
            labels.append(token.replace("</w>", ""))
        rows.append(grid(tiles, labels))
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, 4), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    return np.concatenate(padded, axis=0)[:-4]

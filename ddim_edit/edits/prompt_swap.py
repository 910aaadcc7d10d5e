"""Prompt swap: prompt-to-prompt editing of an inverted image (Hertz et al.; PnP Inversion, Ju et al.).

Two branches run through the one DDIM sampler from the trajectory's x_T:

- the **source** branch replays the trajectory with the source prompt (for ``exact`` trajectories its
  latents are the recorded ones, so the edit starts from an exact reconstruction);
- the **target** branch samples the target prompt and borrows the source branch's cross-attention
  (replace / refine / reweight) and self-attention for a fraction of the steps
  (:mod:`ddim_edit.edits.p2p_control`). It also gets the source's per-step exact-inversion
  correction, so whatever it shares with the source follows the source's path (an identical prompt
  gives the reconstruction). A local blend (:mod:`ddim_edit.edits.local_blend`) on the words that
  differ marks what may change; :func:`edited_image` pastes the source's pixels back outside it.
  With ``mask_guidance`` the target keeps, inside the mask, only the inversion's own error from that
  correction and runs at a lower guidance of its own (:mod:`ddim_edit.edits.mask_guidance`).

UNet evaluations per step: with known source latents, 2 for the target (conditional and
unconditional halves) + the source's conditional half while the target borrows from it, blend maps
are needed, the correction is computed or mask guidance needs the source's prediction: 150 for a
50-step blended swap from an ``exact`` file (the correction shares the target's unconditional half,
see ``shared_uncond``), 200 for one without a blend (the correction takes the source's own). A
replayed (not recorded) source costs 4 per step.

An edit of an ``exact`` trajectory can lower its guidance after the first steps (``late_guidance``):
the layout and colours are settled early, and late steps at full guidance move the edited object's
edges. Recorded corrections then serve the steps at the recorded guidance only; the others compute
theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PromptError, TrajectoryError
from ..replay import KnownRows, guidance_is_recorded, replay_plan
from ..conditioning import PromptEmbeds
from ..sampler import StepInfo, sample
from ..trajectory import Trajectory
from ..schedule import Schedule
from ..options import finite, items, option, words
from .local_blend import BlendRule, blend_mask, blended_pixels, check_change_ramp, parse_change_ramp, voting_side
from .mask_guidance import inversion_lag, mask_correction
from .p2p_control import (
    AttentionController,
    AttentionEditSpec,
    BranchLayout,
    align_tokens,
    injected_steps,
    make_processors,
    refine_map,
    replace_map,
    token_positions,
)

MODES = ("replace", "refine")
SOURCE_ROW, TARGET_ROW = 0, 1  # the batch the swap samples: [source, target]


def _guidance_or_off(example: str, help: str) -> Any:
    """A guidance option that is a guidance ≥ 1 or "off" (None): ``late_guidance``, ``mask_guidance``."""
    return option(None, kind=float, parse=lambda value, key, example: parse_guidance(value, key, example),
                  off="off", metavar="W|off", example=example, help=help)


@dataclass(frozen=True)
class SwapOptions:
    """Settings of :func:`swap` (why the defaults are what they are: the docs' tuning page).

    Attributes:
        mode: ``replace`` (word swap, same token count) or ``refine`` (words added or removed).
        cross_steps: fraction of the steps with cross-attention injection (the first ``int(f·N)``
            steps, as prompt-to-prompt); a dict gives it per target word, with the key
            ``"default"`` for the other tokens.
        self_steps: fraction of the steps with self-attention injection.
        reweight: target word → scale of its attention (prompt-to-prompt's equaliser).
        blend_words: words (of either prompt) whose cross-attention maps make the local-blend mask.
            None (default): the words that differ between the prompts (prompt-to-prompt's practice
            for word swaps); empty: no blend.
        blend_threshold: the mask keeps latent pixels whose normalised accumulated map is above this.
        blend_normalise: ``max`` (prompt-to-prompt) or ``minmax``.
        blend_pool_radius: max-pool radius at the maps' resolution (prompt-to-prompt: 1).
        blend_start: the blend is applied from this fraction of the steps on (prompt-to-prompt: 0.2).
        blend_side: the width, in attention positions, of the layers whose maps vote (None: the
            coarsest layers at least a quarter of the latent's width, prompt-to-prompt's 16 of 64).
        blend_latents: also keep the source's latents outside the mask at each step
            (prompt-to-prompt's LocalBlend). The mask is always used by the pixel composite of
            :func:`edited_image`, which can only bring pixels closer to the source.
        blend_dilate, blend_feather: the pixel composite of :func:`edited_image` grows the mask by this
            many latent pixels and feathers it over this many (see
            :func:`~ddim_edit.edits.local_blend.soft_pixel_mask`).
        blend_change: (low, high) RGB distances (0–255): inside the mask, pixels the edit moved by at
            most ``low`` keep the source's values, by ``high`` or more the edit's, linear between (see
            :func:`~ddim_edit.edits.local_blend.change_weight`); None: the edit everywhere inside.
        correct_target: give the target branch the source branch's per-step exact-inversion
            correction too (as null-text inversion shares its null embeddings between branches):
            a target prompt equal to the source then reproduces the reconstruction.
        correct_inside_mask: keep that whole correction inside the local-blend mask too (there it
            pulls the edited content back towards the source). With it on, an identical prompt
            reproduces the reconstruction even with explicit blend words; by default identical
            prompts have no words that differ, hence no mask. It takes precedence over
            ``mask_guidance``.
        mask_guidance: inside the local-blend mask of an edit with known source latents, the target
            keeps the part of the source's correction that is the inversion's own error and runs at
            this guidance instead of the edit's (the lower of the two; see
            :mod:`~ddim_edit.edits.mask_guidance`). None (default): no correction inside the mask,
            the target samples at the edit's guidance there. It keeps outlines and colours closer
            to the source but weakens some edits.
        reuse_source: for ``exact`` trajectories, take the source latents from the trajectory
            instead of sampling them (same result; the source's guided output is only computed when
            the target's correction needs it at another guidance than the recorded one).
        shared_uncond: with known source latents and no recorded corrections at this guidance,
            compute the source's correction with the target's unconditional half instead of the
            source's own: one UNet evaluation less per step (image → 50-step swap: 200 instead of
            250). Where the correction acts, the unconditional halves cancel: the target takes the
            source's step plus guidance × the difference of the conditional halves. An identical
            prompt still gives the reconstruction bitwise. None (default): shared when the edit has
            a local blend, whose mask keeps the correction where target and source latents agree;
            inside it the target runs its own guidance. Without a blend the correction also acts on
            the edited object, where the unconditional halves differ, so they stay apart.
        late_guidance: the guidance of both branches after the first ``guidance_steps`` of the steps,
            when the source branch reads an ``exact`` trajectory's latents (a guidance interval:
            Kynkäänniemi et al. 2024 found guidance at low noise levels unnecessary), or the edit's
            guidance if that is lower; None (default): the edit's guidance at every step. Lower late
            guidance keeps the edited object's outline and the background closer to the source but
            weakens edits.
        guidance_steps: the fraction of the steps (the first ``int(f·N)``) at the edit's full guidance.
        keep_maps: accumulate every token's cross-attention map (for attention pictures).
        self_max_tokens: self-attention layers with more queries than this are not injected.
    """

    mode: str = option("replace", choices=MODES,
                       help="replace: swap words (same token count); refine: words added or removed.",
                       web={"label": "Mode", "info": "replace: swap words; refine: add or remove words"})
    blend_words: tuple[str, ...] | None = option(
        None, flag="--blend", multiple=True, parse=lambda value, key, example: words(value) or None,
        help="Local blend: word whose attention marks what may change (repeatable; default: the words that "
             "differ between --source and --target).",
        off_flag="--no-blend", off_help="No local blend: every pixel comes from the edit.",
        web={"label": "Blend words (default: the words that differ)", "placeholder": "circle"})
    blend_latents: bool = option(
        False, help="Also blend the latents at each step (prompt-to-prompt's LocalBlend); default: pixels only.")
    blend_threshold: float = option(
        0.3, help="Local blend: keep latent pixels whose accumulated, max-normalised map is above this.")
    blend_change: tuple[float, float] | None = option(
        (20.0, 60.0), parse=parse_change_ramp, off="off", metavar="LOW,HIGH|off",
        format=lambda ramp: ",".join(f"{value:g}" for value in ramp),
        help="Local blend: inside the mask, pixels the edit moved by at most LOW (RGB distance, 0-255) keep "
             "the source's values, by HIGH or more the edit's; off: the edit everywhere inside the mask.")
    reweight: dict[str, float] = option(
        factory=dict, multiple=True, example="blue=2", parse=lambda value, key, example: parse_word_values(
            items(value), key, example),
        help="Scale a target word's attention, WORD=SCALE (repeatable).",
        web={"label": "Reweight (WORD=SCALE, …)", "placeholder": "blue=2"})
    cross_steps: float | dict[str, float] = option(
        0.4, multiple=True, parse=lambda value, key, example: parse_cross_steps(value, key, example),
        help="Fraction of steps with cross-attention injection, or WORD=F per word [default: {default}].",
        web={"label": "Cross-attention steps", "minimum": 0, "maximum": 1, "step": 0.05})
    self_steps: float = option(
        0.6, example="0.4",
        help="Fraction of steps with self-attention injection (lower it for edits that change a shape).",
        web={"label": "Self-attention steps", "minimum": 0, "maximum": 1, "step": 0.05})
    late_guidance: float | None = _guidance_or_off(
        example="2",
        help="Guidance after the first --guidance-steps of an exact trajectory's edit, e.g. 2: the edited "
             "object keeps the source's outline and background better, but edits are weaker; off: "
             "--guidance at every step.")
    mask_guidance: float | None = _guidance_or_off(
        example="3",
        help="Guidance of the edit inside the blend mask of an exact trajectory, where the target then keeps "
             "the inversion's own correction, e.g. 3: outlines and colours nearer the source's, but some "
             "edits weaker; off: --guidance there, without correction.")
    guidance_steps: float = option(
        0.3, minimum=0.0, help="Fraction of the steps at full --guidance before --late-guidance.")
    blend_normalise: str = "max"
    blend_pool_radius: int = 1
    blend_start: float = 0.2
    blend_side: int | None = None
    blend_dilate: int = 1
    blend_feather: int = 1
    correct_target: bool = True
    correct_inside_mask: bool = False
    reuse_source: bool = True
    shared_uncond: bool | None = None
    keep_maps: bool = False
    self_max_tokens: int = 32 ** 2

    def blend_rule(self) -> BlendRule:
        """The local-blend rule these options name."""
        return BlendRule(self.blend_threshold, self.blend_normalise, self.blend_pool_radius)


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
        blend_words: the words whose maps made the blend mask.
        late_guidance: the guidance of the steps after ``guidance_steps`` (None: the edit's
            guidance at every step, e.g. for trajectories other than ``exact``).
        mask_guidance: the target's guidance inside the blend mask (the highest of its steps; None:
            not applied, e.g. without a blend or for trajectories other than ``exact``).
    """

    source_latents: torch.Tensor
    target_latents: torch.Tensor
    unet_evaluations: int
    blend_mask: torch.Tensor | None = None
    attention_maps: dict[str, list[torch.Tensor]] | None = None
    tokens: dict[str, list[str]] = field(default_factory=dict)
    blend_words: tuple[str, ...] = ()
    late_guidance: float | None = None
    mask_guidance: float | None = None
    decoded: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # branch → pixels, see decoded()


# ----------------------------------------------------------------------------- checks


def _check_fraction(field: str, value: float, what: str = "") -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise PromptError(f"{{field}}{what} must be a fraction of the steps in [0, 1], got {value}", field=field,
                          value=value)


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
    _check_fraction("cross_steps", default)
    cross_steps = torch.full((length,), default)
    for word, fraction in per_word.items():
        if word == "default":
            continue
        _check_fraction("cross_steps", fraction, f" for {word!r}")
        cross_steps[_positions_or_fail(model, target, word, "cross-steps")] = float(fraction)
    _check_fraction("self_steps", options.self_steps)
    reweight = torch.ones(length)
    for word, scale in options.reweight.items():
        reweight[_positions_or_fail(model, target, word, "reweight")] = float(scale)
    return AttentionEditSpec(tokens, cross_steps, float(options.self_steps), reweight, options.self_max_tokens)


def parse_word_values(items, field: str, example: str) -> dict[str, float]:
    """``("blue=2", "red=0.5")`` → ``{"blue": 2.0, "red": 0.5}`` (``reweight``, per-word ``cross_steps``).

    A bad item raises :class:`PromptError` about ``field`` (the CLI names its flag), with ``example``.
    """
    parsed: dict[str, float] = {}
    for item in items:
        word, sep, number = item.partition("=")
        try:
            if not sep or not word.strip():
                raise ValueError
            value = float(number)
        except ValueError:
            raise PromptError(f"{{field}} expects WORD=NUMBER items, got {item!r}; e.g. {{field}} {example}",
                              field=field, value=item) from None
        if not math.isfinite(value):
            raise PromptError(f"{{field}} expects a finite NUMBER in WORD=NUMBER, got {item!r}; e.g. {{field}} {example}",
                              field=field, value=item)
        parsed[word.strip()] = value
    return parsed


def parse_cross_steps(value: Any, key: str = "cross_steps", example: str = "0.4") -> float | dict[str, float]:
    """``cross_steps`` from the CLI (``("0.8", "red=0.3")``) or a manifest (``0.8``, ``"0.8,red=0.3"``,
    ``{"default": 0.8, "red": 0.3}``): a fraction, or fractions per word (``"default"``: the other tokens)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return finite(value, key, example)
    per_word: dict[str, float] = {}
    for item in items(value):
        text = str(item).strip()
        if "=" in text:
            per_word.update(parse_word_values((text,), key, "blue=0.3"))
        else:
            per_word["default"] = finite(text, key, example)
    return per_word["default"] if list(per_word) == ["default"] else per_word


def parse_guidance(value: Any, key: str, example: str) -> float:
    """``late_guidance`` / ``mask_guidance`` (``key``): a guidance ≥ 1 ("off" is handled by the option)."""
    number = finite(value, key, example)
    check_guidance_options(SwapOptions(**{key: number}))
    return number


def differing_words(source: str, target: str) -> tuple[str, ...]:
    """The words that an edit changes: source words not in the target's alignment, then new target words.

    Words (whitespace-separated) are aligned globally as prompt-to-prompt aligns tokens
    (:func:`~ddim_edit.edits.p2p_control.align_tokens`): "a red circle" → "a blue circle" gives
    ("red", "blue"), "a circle" → "a striped circle" gives ("striped",).
    """
    source_words, target_words = source.split(), target.split()
    aligned = align_tokens(source_words, target_words)
    kept = {i for i in aligned if i is not None}
    removed = [word for i, word in enumerate(source_words) if i not in kept]
    added = [word for word, i in zip(target_words, aligned) if i is None]
    return tuple(dict.fromkeys(removed + added))


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

    Builds the UNet batch row by row, tells the controller which rows are the source and target
    conditional halves, and applies classifier-free guidance per branch. When the source latents
    are known (read from an ``exact`` trajectory) the source's guided output is computed only if
    ``source_output`` says it is needed (for the target's correction); otherwise only its
    conditional half runs, and only at steps where the target borrows from it or ``source_cond``
    asks for it. After each call ``outputs`` holds the step's UNet outputs by role (for
    :class:`SwapHook`'s mask guidance).
    """

    def __init__(self, model, controller: AttentionController, source_output: list[bool], shared_uncond: bool = False,
                 guidance: list[float] | None = None, source_cond: list[bool] | None = None):
        """``source_output``: per step (the controller's), compute the source's guided output (it is
        sampled, or the target's correction needs it).

        ``shared_uncond``: that output takes the target's unconditional half instead of its own.
        ``guidance``: the guidance at each step, replacing the sampler's.
        ``source_cond``: per step, compute the source's conditional half in any case.
        """
        self.model = model
        self.controller = controller
        self.source_output = source_output
        self.shared_uncond = shared_uncond
        self.guidance = guidance
        self.source_cond = source_cond
        self.outputs: dict[tuple[str, int], torch.Tensor] = {}

    def denoise(self, latents, timestep, cond, uncond, guidance_scale):
        step = self.controller.step
        if self.guidance is not None:
            guidance_scale = self.guidance[step]
        source_output = self.source_output[step]
        embedded = self.model.EMBEDDED_GUIDANCE  # FLUX: guidance is an input of the one conditional call
        guided = guidance_scale > 1.0 and self.model.classifier_free
        if guided and uncond is None:
            raise PromptError("guidance > 1 needs negative/null embeddings")
        rows: list[tuple[str, int]] = []  # (role, branch)
        if guided:
            if source_output and not self.shared_uncond:
                rows.append(("uncond", 0))
            rows.append(("uncond", 1))
        if source_output or self.controller.needs_source or (self.source_cond and self.source_cond[step]):
            rows.append(("cond", 0))
        rows.append(("cond", 1))
        index = {row: k for k, row in enumerate(rows)}
        source_row, target_row = index.get(("cond", 0)), index[("cond", 1)]
        layout = BranchLayout([], [], {"target": target_row})
        if source_row is not None:
            layout = BranchLayout([source_row], [target_row], {"source": source_row, "target": target_row})
        batch = torch.stack([latents[branch] for _, branch in rows])
        by_role = {"cond": cond, "uncond": uncond}
        embeddings = PromptEmbeds.cat([by_role[role].rows(branch) for role, branch in rows])
        self.controller.layout = layout
        try:
            output = self.model.denoise(batch, timestep, embeddings, None, guidance_scale if embedded else 1.0)
        finally:
            self.controller.layout = None
        self.outputs = {row: output[k] for row, k in index.items()}

        def branch_output(branch: int) -> torch.Tensor:
            out_cond = output[index[("cond", branch)]]
            if not guided:
                return out_cond
            out_uncond = output[index.get(("uncond", branch), index[("uncond", 1)])]
            return out_uncond + guidance_scale * (out_cond - out_uncond)

        target = branch_output(1)
        # Known source latents and no correction to compute: the hook puts the recorded latents back.
        source = branch_output(0) if source_output else target
        return torch.stack([source, target])


class SwapHook(KnownRows):
    """Sets the controller's step; after each step restores known source latents, corrects and blends.

    The two-branch replay (:class:`~ddim_edit.replay.KnownRows`): with known source latents z_i (an
    ``exact`` trajectory) the source row follows them and the target gets the source's
    Direct-Inversion correction c_i: the recorded one at the recorded guidance, otherwise
    c_i = z_{i+1} − step(z_i) from the source row, which the denoiser computed with the guided output
    at this guidance. Once a local-blend mask exists the correction is kept outside it only: it
    reproduces the source's path, which is what the blend keeps there, while inside the mask it
    would pull the edited content back towards the source. Inside, with ``mask_guidance``, the
    target gets the inversion's lag and its own guidance instead (:mod:`.mask_guidance`), from the
    UNet outputs that ``denoiser`` kept.
    """

    def __init__(self, controller: AttentionController, options: SwapOptions, known_latents: torch.Tensor | None,
                 recorded_corrections: torch.Tensor | None, blend: bool, latent_hw: tuple[int, int],
                 recorded_steps: list[bool], schedule: Schedule | None = None, denoiser: BranchDenoiser | None = None,
                 mask_guidance: float | None = None):
        """``recorded_steps``: per step, whether ``recorded_corrections`` holds (it is None when none does).

        ``schedule``, ``denoiser``: the sampling schedule and the branch denoiser (with its per-step
        guidance), needed with ``mask_guidance`` (the target's guidance inside the mask; None: no
        correction there).
        """
        if mask_guidance is not None and (schedule is None or denoiser is None or denoiser.guidance is None
                                          or known_latents is None):
            raise ValueError("mask guidance needs the schedule, the branch denoiser with its per-step guidance "
                             "and the known source latents")
        known = {} if known_latents is None else {SOURCE_ROW: known_latents}
        super().__init__(known, {TARGET_ROW: SOURCE_ROW} if known and options.correct_target else {})
        self.controller = controller
        self.options = options
        self.known_latents = known_latents
        self.recorded_corrections = recorded_corrections
        self.recorded_steps = recorded_steps
        self.blend = blend
        self.latent_hw = latent_hw
        self.schedule = schedule
        self.denoiser = denoiser
        self.mask_guidance = mask_guidance
        self.mask: torch.Tensor | None = None
        self._target_before: torch.Tensor | None = None

    def before_step(self, step: StepInfo, latents: torch.Tensor) -> None:
        self.controller.begin_step(step.index, step.num_steps)
        self._target_before = latents[TARGET_ROW]

    def inside_correction(self, step: StepInfo, latents: torch.Tensor) -> torch.Tensor:
        """The target's correction inside the mask under mask guidance (:func:`.mask_guidance.mask_correction`)."""
        outputs = self.denoiser.outputs
        lag = inversion_lag(self.known_latents[step.index].to(latents), self.known_latents[step.index + 1].to(latents),
                            outputs[("cond", 0)].to(latents), self.schedule, step.index)
        uncond = outputs.get(("uncond", 1))
        return mask_correction(lag, outputs[("cond", 1)].to(latents), None if uncond is None else uncond.to(latents),
                               self._target_before.to(latents), self.denoiser.guidance[step.index], self.mask_guidance,
                               self.schedule, step.index)

    def correction(self, step: StepInfo, latents: torch.Tensor, row: int, reference: int) -> torch.Tensor:
        """The recorded correction where the trajectory has one at this guidance, else the source row's;
        once a blend mask exists, kept outside it (inside: mask guidance's, or none)."""
        if self.recorded_steps[step.index]:
            correction = self.recorded_corrections[step.index].to(latents)
        else:
            correction = super().correction(step, latents, row, reference)
        if self.mask is not None and not self.options.correct_inside_mask:
            outside = (~self.mask).to(latents)
            correction = correction * outside
            if self.mask_guidance is not None:
                correction = correction + (1 - outside) * self.inside_correction(step, latents)
        return correction

    def after_step(self, step: StepInfo, latents: torch.Tensor) -> torch.Tensor:
        blending = self.blend and step.index >= injected_steps(self.options.blend_start, step.num_steps)
        maps = self.controller.word_maps() if blending else None
        if maps:
            self.mask = blend_mask(maps, self.latent_hw, self.options.blend_rule())
        latents = super().after_step(step, latents)
        if blending and self.mask is not None and self.options.blend_latents:
            source, target = latents[SOURCE_ROW], latents[TARGET_ROW]
            return torch.stack([source, source + self.mask.to(latents) * (target - source)])
        return latents


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
        guidance_scale: guidance of the edit (default: the trajectory's). Any guidance works with an
            ``exact`` trajectory: its source branch reads the recorded latents, and the target's
            correction is computed at this guidance (after ``options.guidance_steps`` of the steps,
            at ``options.late_guidance`` if that is lower). A ``null-text`` trajectory is replayed with
            its embeddings, fitted for the recorded guidance.
        progress: progress bar on stderr.

    Raises:
        PromptError: empty target prompt, replace with different token counts, unknown blend or
            reweight words, fractions outside [0, 1].
        TrajectoryError: source prompt different from the trajectory's, trajectory not for this model.
    """
    check_source_prompt(traj, source_prompt)
    source = traj.metadata["prompt"]
    target = target_text(target_prompt)
    length = model.text_length
    spec = build_spec(model, source, target, options, length)
    options.blend_rule()  # fails early on a bad rule
    if options.blend_change is not None:
        check_change_ramp(options.blend_change)
    _check_fraction("blend_start", options.blend_start)
    check_guidance_options(options)
    blend_words = differing_words(source, target) if options.blend_words is None else tuple(options.blend_words)
    map_tokens = blend_positions(model, source, target, blend_words) if blend_words else {}
    source_known = options.reuse_source and traj.method == "exact"
    plan = replay_plan(model, traj, [source, target], guidance_scale, with_corrections=not source_known)
    latent_hw = tuple(traj.x_T.shape[-2:])
    blend_side = options.blend_side or voting_side(cross_attention_widths(model, latent_hw[1]), latent_hw[1])
    controller = AttentionController(spec, map_tokens, blend_side, options.keep_maps, latent_hw)
    num_steps = plan.schedule.num_steps
    per_step = guidance_per_step(plan.guidance_scale, options, num_steps) if source_known else None
    # Steps whose guidance is the recorded one take the recorded correction; the others compute it.
    recorded = [source_known and traj.corrections is not None and guidance_is_recorded(traj, w)
                for w in (per_step or [plan.guidance_scale] * num_steps)]
    corrections = None  # sampler corrections for both rows: only an exact replay without known latents
    if traj.method == "exact" and not source_known:
        corrections = plan.corrections
        if not options.correct_target:
            corrections = torch.cat([corrections, torch.zeros_like(corrections)], dim=1)
    known = traj.latents.to(model.device) if source_known else None
    recorded_corrections = traj.corrections.to(model.device) if any(recorded) else None
    inside = applied_mask_guidance(options, source_known, bool(map_tokens))
    blend_from = injected_steps(options.blend_start, num_steps)
    denoiser = BranchDenoiser(model, controller,
                              source_output=[not source_known or (options.correct_target and not at_recorded)
                                             for at_recorded in recorded],
                              shared_uncond=source_known and shares_uncond(options, bool(map_tokens)),
                              guidance=per_step,
                              source_cond=[inside is not None and index >= blend_from for index in range(num_steps)])
    hook = SwapHook(controller, options, known, recorded_corrections, bool(map_tokens), latent_hw, recorded,
                    plan.schedule, denoiser, inside)
    before = model.unet_evaluations
    with torch.no_grad(), model.installed_processors(make_processors(model, controller)):
        latents = sample(denoiser, plan.schedule, plan.x_T.clone(), plan.conditioning, plan.guidance_scale,
                         corrections=corrections, hooks=[hook], progress=progress, desc="swapping")
    evaluations = model.unet_evaluations - before
    tokens = {"source": model.prompt_tokens(source), "target": model.prompt_tokens(target)}
    maps = _average_maps(controller, tokens, latent_hw, model.FIRST_WORD_POSITION) if options.keep_maps else None
    late = per_step[-1] if per_step and per_step[-1] != plan.guidance_scale else None
    applied = None if inside is None or hook.mask is None else min(inside, max(per_step))
    return SwapResult(latents[:1], latents[1:], evaluations, hook.mask, maps, tokens, blend_words, late, applied)


def applied_mask_guidance(options: SwapOptions, source_known: bool, blended: bool) -> float | None:
    """``options.mask_guidance`` where it acts: known source latents, a local blend and the target's
    correction kept outside the mask only; None otherwise."""
    if not (source_known and blended and options.correct_target) or options.correct_inside_mask:
        return None
    return options.mask_guidance


def guidance_per_step(guidance: float, options: SwapOptions, num_steps: int) -> list[float]:
    """The edit's guidance at each step: ``guidance`` for the first ``int(guidance_steps·N)``, then
    ``min(late_guidance, guidance)`` (``guidance`` throughout when ``late_guidance`` is None)."""
    late = guidance if options.late_guidance is None else min(float(options.late_guidance), guidance)
    full = injected_steps(options.guidance_steps, num_steps)
    return [guidance if index < full else late for index in range(num_steps)]


def check_guidance_options(options: SwapOptions) -> None:
    """Raise :class:`PromptError` for a late or mask guidance below 1 or not finite, or a
    ``guidance_steps`` fraction outside [0, 1]."""
    for name, example in (("late_guidance", "2"), ("mask_guidance", "3")):
        value = getattr(options, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 1.0):
            raise PromptError(f"{{field}} must be a guidance ≥ 1 (1: none), got {value}; e.g. {{field}} {example}",
                              field=name, value=value)
    _check_fraction("guidance_steps", options.guidance_steps)


def shares_uncond(options: SwapOptions, blended: bool) -> bool:
    """Whether the source's correction takes the target's unconditional half (see ``SwapOptions.shared_uncond``)."""
    return blended if options.shared_uncond is None else bool(options.shared_uncond)


def target_text(target_prompt: str | None) -> str:
    """The target prompt stripped, or a :class:`PromptError` when it is empty."""
    if target_prompt is None or not target_prompt.strip():
        raise PromptError('the target prompt is empty; pass {field} "…" describing the edited image',
                          field="target_prompt")
    return target_prompt.strip()


def check_source_prompt(traj, prompt: str | None) -> None:
    """A source prompt given with a trajectory must be the trajectory's own (surrounding spaces aside)."""
    recorded = traj.metadata["prompt"]
    if prompt is not None and prompt.strip() != recorded:
        raise TrajectoryError(f"{{field}} {prompt!r} differs from the trajectory's prompt {recorded!r}; "
                              "give the trajectory's prompt, or the image to invert it again", field="source_prompt")


def decoded(model, result: SwapResult, branch: str) -> np.ndarray:
    """The final latents of ``branch`` (``source``: the reconstruction, or ``target``: the edit)
    decoded to uint8 [H, W, 3], once per result (later calls return the same pixels)."""
    from ..workflow import decode

    if branch not in result.decoded:
        result.decoded[branch] = decode(model, getattr(result, f"{branch}_latents"))
    return result.decoded[branch]


def edited_image(model, result: SwapResult, source_pixels: np.ndarray | None = None,
                 options: SwapOptions = SwapOptions()) -> np.ndarray:
    """The edit as uint8 [H, W, 3]: decoded, and with a local blend the source pixels pasted back outside the mask.

    Args:
        source_pixels: the source image at the working size (None: the decoded source branch).
    """
    edited = decoded(model, result, "target")
    if result.blend_mask is None:
        return edited
    if source_pixels is None:
        source_pixels = decoded(model, result, "source")
    return blended_pixels(edited, source_pixels, result.blend_mask, options.blend_dilate, options.blend_feather,
                          options.blend_change)


def cross_attention_widths(model, latent_width: int) -> list[int]:
    """The width, in attention positions, of each cross-attention resolution of the encoder.

    An encoder site at resolution level i works at the latent size divided by 2^i.
    """
    levels = sorted({site.level for site in model.attention_sites(roles=("cross", "joint"), stages=("encoder",))})
    widths = [math.ceil(latent_width / 2 ** level) for level in levels]
    if not widths:
        raise PromptError("this UNet has no cross-attention layers; prompt swap needs them")
    return widths


def _average_maps(controller: AttentionController, tokens: dict[str, list[str]], latent_hw: tuple[int, int],
                  first: int) -> dict[str, list[torch.Tensor]]:
    """Per branch and prompt token, the accumulated map averaged over layers, [h, w] in [0, 1]
    (token k at text position ``first`` + k)."""
    result: dict[str, list[torch.Tensor]] = {}
    for branch, branch_tokens in tokens.items():
        layers = []
        for per_branch in controller.accumulated.values():
            if branch not in per_branch:
                continue
            maps = per_branch[branch]  # [queries, L]
            height, width = controller.grid(maps.shape[0])
            image = maps.T.reshape(-1, 1, height, width)
            layers.append(F.interpolate(image, size=latent_hw, mode="bilinear", align_corners=False)[:, 0])
        if not layers:
            continue
        mean = torch.stack(layers).mean(0)
        result[branch] = []
        for position in range(first, first + len(branch_tokens)):
            heat = mean[position]
            heat = heat - heat.min()
            result[branch].append((heat / heat.max().clamp_min(1e-12)).float().cpu())  # pictures are numpy
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

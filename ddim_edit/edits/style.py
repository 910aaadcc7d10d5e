"""Style transfer through inversion: the content of one image in the style of another (StyleID).

StyleID (Chung, Hyun & Heo, "Style Injection in Diffusion", CVPR 2024) inverts a content image and
a style image, then samples a stylised image in which, in the decoder's later self-attention
layers, the keys and values come from the style image at the same step while the query blends the
content image's query with the output's own (query preservation):

    Q̃_cs = γ · Q_c + (1 − γ) · Q_cs,      K̃ = K_s,   Ṽ = V_s,
    Attn = softmax(T · Q̃_cs K̃ᵀ / √d) Ṽ                       (attention temperature T),

and the output starts from x_T^cs = AdaIN(x_T^c, x_T^s): the content's inverted noise with the
style's per-channel mean and standard deviation.

StyleID records Q, K and V of every injected layer at every inversion step to files (> 3 GB per
image). Here the three branches run as one batch through the one DDIM sampler, in the order
``[content, style, output]``: the content and style branches are their trajectories' recorded
(inverted) latents, evaluated at each step with the output's prompt and guidance (StyleID: the empty
prompt, no guidance), and :class:`StyleAttnProcessor` takes Q_c, K_s and V_s from them in the same
UNet call. Nothing is stored between steps, so memory does not grow with the number of steps.
Because only the recorded latents are read, the result does not depend on how a trajectory was
made (method, caption, guidance): a trajectory inverted with a caption at guidance 7.5 and one
inverted unconditionally give the same kind of result.

The layout comes from the content in one more place than in StyleID: in the encoder's
self-attention layers (by default) the output attends with the *content's* attention map over its
own values, softmax(Q_c K_cᵀ / √d) V_cs, the self-attention map injection of Plug-and-Play
(Tumanyan et al., CVPR 2023). With StyleID's query preservation alone the output's object drifted
towards the style image's object on some pairs (a 5–6 px shift at 64 px); with the encoder's maps
it stays, and γ can be 0 (see :class:`StyleOptions`).

Notation: ``gamma`` γ, ``temperature`` T, branches ``content`` (c), ``style`` (s), ``output`` (cs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..attention import AttentionSite, EditAttnProcessor
from ..joint_attention import JointEditProcessor, JointTokens
from ..errors import DdimEditError, TrajectoryError
from ..options import option, pair, words
from ..replay import KnownRows, trajectory_schedule
from ..sampler import Conditioning, SamplerHook, StepInfo, sample
from ..trajectory import Trajectory

CONTENT, STYLE, OUTPUT = 0, 1, 2
NUM_BRANCHES = 3
IMAGE_ATTENTION = ("self", "joint")
"""The roles whose image → image attention style edits: a UNet's self-attention, a transformer's joint attention."""
OUTPUT_CORRECTIONS = ("content", "none")


class StyleOptionError(DdimEditError):
    """A style-transfer setting is out of range or names no layer of the model."""


def layers_spec(value: Any) -> tuple[str, ...] | None:
    """The CLI's and manifests' ``layers``: names or prefixes (comma-separated text or a list);
    nothing or ``styleid`` → None (StyleID's choice)."""
    names = words(value)
    return None if names in ((), ("styleid",)) else names


@dataclass(frozen=True)
class StyleOptions:
    """Settings of :func:`style_transfer` (defaults: StyleID's, except γ; the measurements behind
    them: the docs' tuning page).

    Attributes:
        gamma: query preservation γ in [0, 1]; 1 keeps the content's query, 0 the output's own.
            0 here, since the structure layers carry the layout; StyleID uses 0.75.
        temperature: attention temperature T > 0 multiplying the injected layers' logits (1: none).
        layers: decoder self-attention layers to inject into: processor names or name prefixes
            (``up_blocks.2`` selects every self-attention layer of that block), or ``("all",)``.
            None: StyleID's choice (see :func:`styleid_layers`).
        structure_layers: self-attention layers (of any part of the UNet, none of ``layers``) where
            the output attends with the content's attention map over its own values
            (Plug-and-Play's map injection), in the same steps as the style injection: names or
            prefixes as for ``layers``, or ``("all",)`` for every self-attention layer outside
            ``layers``. None: the encoder's (down blocks') self-attention layers; ``()``: none
            (StyleID).
        injection_start, injection_end: inject at sampling steps whose fraction i / N lies in
            [start, end); StyleID injects at every step it samples (0, 1).
        adain: start the output from AdaIN(x_T content, x_T style) instead of x_T content.
        inject_key_value: replace the output's keys and values by the style's; False keeps the
            output's own (an ablation: only the query blend and T act).
        output_corrections: ``content``: the output branch gets the content branch's per-step
            Direct-Inversion correction c_i = z_{i+1} − step(z_i), computed at the output's prompt
            and guidance (it is the content branch with edited attention); ``none``: no corrections.
        prompt: the prompt of all three branches ("" as in StyleID).
        guidance_scale: classifier-free guidance (None: 1, no guidance, as in StyleID).
    """

    gamma: float = option(
        0.0, example="0.5",
        help="Query preservation γ in [0, 1]: higher keeps more content (StyleID: 0.75; here the "
             "structure layers keep the layout).",
        web={"label": "γ (keep the content's query)", "minimum": 0, "maximum": 1, "step": 0.05})
    temperature: float = option(1.5, help="Attention temperature T > 0 on the injected layers' logits.",
                                web={"label": "Temperature", "minimum": 0.5, "maximum": 3, "step": 0.1})
    layers: tuple[str, ...] | None = option(
        None, kind=str, parse=lambda value, key, example: layers_spec(value),
        help="Decoder self-attention layers to inject into: comma-separated names or prefixes "
             "(e.g. up_blocks.2,up_blocks.3), 'all', or 'styleid' (default: all but the lowest-resolution "
             "attention block).")
    structure_layers: tuple[str, ...] | None = option(
        None, kind=str, parse=lambda value, key, example: structure_spec(value), off="encoder",
        help="Self-attention layers where the output takes the content's attention maps (Plug-and-Play): "
             "comma-separated names or prefixes (e.g. down_blocks.0), 'all' (every one outside --layers), "
             "'encoder', or 'none' (StyleID).")
    injection_start: float = option(
        0.0, kind=float, flag="--injection-window", also=("injection_end",), example="0 1",
        parse=lambda value, key, example: pair(value, key, example, what="two numbers [START, END]"),
        help="Inject at steps whose fraction i/N lies in [START, END).")
    injection_end: float = 1.0
    adain: bool = option(True, flag="--no-adain", help="Start from the content's x_T without the style's statistics.",
                         web={"label": "AdaIN start"})
    inject_key_value: bool = option(True, flag="--no-kv-injection", help="Ablation: keep the output's own keys/values.")
    output_corrections: str = option(
        "content", choices=OUTPUT_CORRECTIONS,
        help="The output branch gets the content branch's per-step corrections, or none.")
    prompt: str = ""
    guidance_scale: float | None = None

    def __post_init__(self) -> None:
        check_style_options(self)


def check_style_options(options: StyleOptions) -> None:
    """Raise :class:`StyleOptionError` for out-of-range settings, with the accepted range."""
    if not isinstance(options.gamma, (int, float)) or not 0.0 <= options.gamma <= 1.0 or math.isnan(options.gamma):
        raise StyleOptionError(f"{{field}} must be in [0, 1] (0 by default, 0.75 in StyleID), got {options.gamma}; "
                               "e.g. {field} 0.5",
                               field="gamma", value=options.gamma)
    temperature = options.temperature
    if not isinstance(temperature, (int, float)) or not temperature > 0 or math.isinf(temperature):
        raise StyleOptionError(f"{{field}} must be a positive number (1.5 in StyleID), got {options.temperature}; "
                               "e.g. {field} 1.5", field="temperature", value=options.temperature)
    if not 0.0 <= options.injection_start <= options.injection_end <= 1.0:
        raise StyleOptionError(
            f"the injection window must satisfy 0 <= start <= end <= 1, got [{options.injection_start}, "
            f"{options.injection_end}]")
    if options.output_corrections not in OUTPUT_CORRECTIONS:
        raise StyleOptionError(
            f"output_corrections must be one of {OUTPUT_CORRECTIONS}, got {options.output_corrections!r}")
    if options.guidance_scale is not None and not options.guidance_scale > 0:
        raise StyleOptionError(f"{{field}} must be positive, got {options.guidance_scale}", field="guidance_scale",
                               value=options.guidance_scale)


# ----------------------------------------------------------------------------------- layers
def decoder_self_attention(model) -> list[AttentionSite]:
    """The decoder's (up blocks') self-attention sites, in the model's order."""
    return model.attention_sites(roles=IMAGE_ATTENTION, stages=("decoder",))


def styleid_layers(model) -> list[str]:
    """StyleID's injection layers: decoder self-attention except the lowest-resolution attention block.

    StyleID injects into the self-attention of SD 1.x output blocks 6–11, i.e. diffusers'
    ``up_blocks.2`` and ``up_blocks.3``; ``up_blocks.1`` (the lowest-resolution decoder block with
    attention) keeps its own keys and values, which carry the content's layout. A UNet whose decoder
    has attention at a single resolution injects there.
    """
    sites = decoder_self_attention(model)
    coarsest = max(site.level for site in sites)
    kept = {site.level for site in sites} - {coarsest}
    return [site.name for site in sites if site.level in (kept or {coarsest})]


def encoder_self_attention(model) -> list[AttentionSite]:
    """The encoder's (down blocks') self-attention sites, in the model's order."""
    return model.attention_sites(roles=IMAGE_ATTENTION, stages=("encoder",))


def resolve_structure_layers(model, spec: tuple[str, ...] | list[str] | None, style_layers: list[str]) -> list[str]:
    """Processor names of the structure layers (None: the encoder's self-attention; ``()``: none).

    Raises:
        StyleOptionError: when an entry matches no self-attention layer outside ``style_layers``.
    """
    if spec is None:
        return [site.name for site in encoder_self_attention(model) if site.name not in style_layers]
    available = [site.name for site in model.attention_sites(roles=IMAGE_ATTENTION) if site.name not in style_layers]
    return _match_layers(spec, available, "self-attention layer outside the style layers")


def structure_spec(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The CLI's and manifests' ``structure_layers``: ``encoder`` or nothing → None (the default),
    ``none`` → ``()``, else the names or prefixes (comma-separated text or a list)."""
    names = words(value) if value is not None else ()
    if names in ((), ("encoder",)):
        return None
    return () if names == ("none",) else names


def resolve_layers(model, spec: tuple[str, ...] | list[str] | None) -> list[str]:
    """Processor names for a layer spec (names, name prefixes, ``all``; None: :func:`styleid_layers`).

    Raises:
        StyleOptionError: when an entry matches no decoder self-attention layer.
    """
    if spec is None:
        return styleid_layers(model)
    return _match_layers(spec, [site.name for site in decoder_self_attention(model)], "decoder self-attention layer")


def _match_layers(spec: tuple[str, ...] | list[str], available: list[str], what: str) -> list[str]:
    """The names in ``available`` that the entries of ``spec`` (names, prefixes, ``all``) select, in UNet order."""
    chosen: list[str] = []
    for entry in spec:
        entry = entry.strip()
        if not entry:
            continue
        if entry == "all":
            matches = available
        else:
            matches = [name for name in available
                       if name == entry or name.startswith(entry.rstrip(".") + ".")]
        if not matches:
            blocks = sorted({".".join(name.split(".")[:2]) for name in available})
            example = f" or a full name such as {available[-1]!r}" if available else ""
            raise StyleOptionError(
                f"layer {entry!r} is no {what} of this model; use 'all', a block ({', '.join(blocks)}){example}")
        chosen.extend(name for name in matches if name not in chosen)
    return [name for name in available if name in chosen]


# ----------------------------------------------------------------------------------- attention
@dataclass
class InjectionSwitch:
    """Whether the injection acts at the current step; set by :class:`InjectionSchedule`."""

    active: bool = False


def by_branch(what: str, *tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """[groups · 3, ...] tensors as [groups, 3, ...] (``[content, style, output]`` per group); None stays None.

    Raises:
        RuntimeError: when the batch is not a whole number of groups (``what`` names the processor).
    """
    batch = tensors[0].shape[0]
    if batch % NUM_BRANCHES:
        raise RuntimeError(f"{what} attention expects groups of {NUM_BRANCHES} branches, got a batch of {batch}")
    shape = (batch // NUM_BRANCHES, NUM_BRANCHES)
    return tuple(None if t is None else t.unflatten(0, shape) for t in tensors)


class StyleAttnProcessor(EditAttnProcessor):
    """StyleID's self-attention for a batch laid out as groups of ``[content, style, output]``.

    With guidance the UNet batch is ``[uncond group, cond group]``; each group holds the three
    branches. The content and style branches attend as usual. While the switch is on, the output
    branch uses Q̃ = γ Q_c + (1 − γ) Q_cs, keys/values of the style branch (or its own with
    ``inject_key_value=False``) and logits scaled by T (``scale = T / √d`` in SDPA).
    """

    def __init__(self, site: AttentionSite, switch: InjectionSwitch, gamma: float = 0.75, temperature: float = 1.5,
                 inject_key_value: bool = True):
        super().__init__(site)
        self.switch = switch
        self.gamma = float(gamma)
        self.temperature = float(temperature)
        self.inject_key_value = inject_key_value

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn,
               attention_mask: torch.Tensor | None) -> torch.Tensor:
        if not self.switch.active:
            return super().attend(query, key, value, attn, attention_mask)
        q, k, v, mask = by_branch("style", query, key, value, attention_mask)
        groups = q.shape[0]
        # content and style: plain self-attention
        sources = F.scaled_dot_product_attention(
            q[:, :OUTPUT].flatten(0, 1), k[:, :OUTPUT].flatten(0, 1), v[:, :OUTPUT].flatten(0, 1),
            attn_mask=None if mask is None else mask[:, :OUTPUT].flatten(0, 1)).unflatten(0, (groups, OUTPUT))
        # output: query preservation, injected keys/values, temperature
        q_cs = self.gamma * q[:, CONTENT] + (1.0 - self.gamma) * q[:, OUTPUT]
        donor = STYLE if self.inject_key_value else OUTPUT
        scale = self.temperature / math.sqrt(query.shape[-1])
        output = F.scaled_dot_product_attention(q_cs, k[:, donor], v[:, donor], scale=scale,
                                                attn_mask=None if mask is None else mask[:, OUTPUT])
        return torch.cat([sources, output[:, None]], dim=1).flatten(0, 1)


class StructureAttnProcessor(EditAttnProcessor):
    """Plug-and-Play's self-attention map injection for a batch of ``[content, style, output]`` groups.

    While the switch is on, the output branch attends with the content's queries and keys over its
    own values: softmax(Q_c K_cᵀ / √d) V_cs, so its layout follows the content's attention map
    while its features (the style's, through the decoder's injected layers) stay its own. The
    content and style branches attend as usual.
    """

    def __init__(self, site: AttentionSite, switch: InjectionSwitch):
        super().__init__(site)
        self.switch = switch

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn,
               attention_mask: torch.Tensor | None) -> torch.Tensor:
        if not self.switch.active:
            return super().attend(query, key, value, attn, attention_mask)
        q, k = by_branch("structure", query, key)
        q = torch.cat([q[:, :OUTPUT], q[:, CONTENT:CONTENT + 1]], dim=1).flatten(0, 1)
        k = torch.cat([k[:, :OUTPUT], k[:, CONTENT:CONTENT + 1]], dim=1).flatten(0, 1)
        return super().attend(q, k, value, attn, attention_mask)


class JointStyleProcessor(JointEditProcessor):
    """:class:`StyleAttnProcessor` on a joint attention (SD3, FLUX): the output branch's *image*
    queries get Q̃ = γ Q_c + (1 − γ) Q_cs and attend, at temperature T, over the style branch's image
    keys and values and the output's own text keys and values; its text tokens and the content and
    style branches attend as usual."""

    def __init__(self, site: AttentionSite, switch: InjectionSwitch, gamma: float = 0.75, temperature: float = 1.5,
                 inject_key_value: bool = True):
        super().__init__(site)
        self.switch, self.gamma, self.temperature = switch, float(gamma), float(temperature)
        self.inject_key_value = inject_key_value

    def attend(self, query, key, value, attn, tokens: JointTokens):
        out = super().attend(query, key, value, attn, tokens)
        if not self.switch.active:
            return out
        q, k, v, o = by_branch("style", query, key, value, out)
        image = tokens.image
        donor = STYLE if self.inject_key_value else OUTPUT
        keys, values = k[:, OUTPUT].clone(), v[:, OUTPUT].clone()
        keys[:, :, image], values[:, :, image] = k[:, donor, :, image], v[:, donor, :, image]
        q_cs = self.gamma * q[:, CONTENT, :, image] + (1.0 - self.gamma) * q[:, OUTPUT, :, image]
        o[:, OUTPUT, :, image] = F.scaled_dot_product_attention(q_cs, keys, values,
                                                                scale=self.temperature / math.sqrt(query.shape[-1]))
        return o.flatten(0, 1)


class JointStructureProcessor(JointEditProcessor):
    """:class:`StructureAttnProcessor` on a joint attention: the output branch's image queries attend
    with the content's queries and keys over the output's own values."""

    def __init__(self, site: AttentionSite, switch: InjectionSwitch):
        super().__init__(site)
        self.switch = switch

    def attend(self, query, key, value, attn, tokens: JointTokens):
        out = super().attend(query, key, value, attn, tokens)
        if not self.switch.active:
            return out
        q, k, v, o = by_branch("structure", query, key, value, out)
        image = tokens.image
        o[:, OUTPUT, :, image] = F.scaled_dot_product_attention(q[:, CONTENT, :, image], k[:, CONTENT], v[:, OUTPUT])
        return o.flatten(0, 1)


class InjectionSchedule(SamplerHook):
    """Turns the injection on at steps whose fraction i / N lies in [start, end)."""

    def __init__(self, switch: InjectionSwitch, start: float = 0.0, end: float = 1.0):
        self.switch, self.start, self.end = switch, start, end
        self.active_steps: list[int] = []

    def before_step(self, step: StepInfo, latents: torch.Tensor) -> None:
        self.switch.active = self.start <= step.fraction < self.end
        if self.switch.active:
            self.active_steps.append(step.index)


def style_processors(model, layer_names: list[str], switch: InjectionSwitch, options: StyleOptions,
                     structure_names: list[str] = ()) -> dict[str, object]:
    """name → :class:`StyleAttnProcessor` for the style layers, :class:`StructureAttnProcessor` for the structure layers."""
    by_name = {site.name: site for site in model.attention_sites(roles=IMAGE_ATTENTION)}

    def joint(name: str) -> bool:
        return by_name[name].layout != "unet"

    processors: dict[str, object] = {
        name: (JointStructureProcessor if joint(name) else StructureAttnProcessor)(by_name[name], switch)
        for name in structure_names}
    processors.update({
        name: (JointStyleProcessor if joint(name) else StyleAttnProcessor)(
            by_name[name], switch, options.gamma, options.temperature, options.inject_key_value)
        for name in layer_names})
    return processors


# ----------------------------------------------------------------------------------- latents
def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """AdaIN over latents [..., C, h, w]: the content normalised per channel, given the style's mean and std.

    AdaIN(x, y) = σ(y) (x − μ(x)) / σ(x) + μ(y), statistics over the spatial dimensions (StyleID's
    initial-latent AdaIN). σ(x) is clamped at ``eps``; AdaIN(x, x) = x up to rounding.
    """
    dims = (-2, -1)
    mean_c, std_c = content.mean(dims, keepdim=True), content.std(dims, keepdim=True).clamp_min(eps)
    mean_s, std_s = style.mean(dims, keepdim=True), style.std(dims, keepdim=True)
    return (content - mean_c) / std_c * std_s + mean_s


# ----------------------------------------------------------------------------------- the edit
@dataclass
class StyleResult:
    """The three branches' z_0 and what the run cost.

    Attributes:
        latents: [3, C, h, w]: content reconstruction, style reconstruction, stylised output.
        layers: the processor names injected into.
        injected_steps: the sampling step indices at which the injection acted.
        unet_evaluations: UNet batch items evaluated (3 per step, 6 with guidance > 1).
        settings: the options as used (JSON-ready).
        structure_layers: the processor names given the content's attention maps.
    """

    latents: torch.Tensor
    layers: list[str]
    injected_steps: list[int]
    unet_evaluations: int
    settings: dict = field(default_factory=dict)
    structure_layers: list[str] = field(default_factory=list)

    @property
    def content(self) -> torch.Tensor:
        return self.latents[CONTENT:CONTENT + 1]

    @property
    def style(self) -> torch.Tensor:
        return self.latents[STYLE:STYLE + 1]

    @property
    def output(self) -> torch.Tensor:
        return self.latents[OUTPUT:OUTPUT + 1]


def check_pair(content: Trajectory, style: Trajectory) -> None:
    """The two trajectories must share timesteps and latent shape to run as one batch."""
    if content.timesteps != style.timesteps:
        raise TrajectoryError(
            f"the content and style trajectories have different timesteps ({content.num_steps} vs "
            f"{style.num_steps} steps); invert both with the same --steps/--spacing, or pass images")
    if content.latents.shape[1:] != style.latents.shape[1:]:
        raise TrajectoryError(
            f"the content latents {tuple(content.latents.shape[1:])} and style latents "
            f"{tuple(style.latents.shape[1:])} differ in size; pass the style as an image (it is resized "
            "to the content's size) or invert it at the content's size")


@dataclass
class StylePlan:
    """What the sampler needs for the batch ``[content, style, output]``."""

    schedule: object
    x_T: torch.Tensor  # noqa: N815
    conditioning: Conditioning
    guidance_scale: float
    known: KnownRows


def style_plan(model, content: Trajectory, style: Trajectory, options: StyleOptions) -> StylePlan:
    """x_T, conditioning and the recorded branches of the batch ``[content, style, output]``.

    All three rows take ``options.prompt`` (negative: the empty prompt) at ``options.guidance_scale``
    (default 1). The output starts from AdaIN(x_T^c, x_T^s) when ``options.adain``.
    """
    check_pair(content, style)
    schedule = trajectory_schedule(model, content)
    trajectory_schedule(model, style)  # checks the style trajectory fits the model too
    guidance = 1.0 if options.guidance_scale is None else float(options.guidance_scale)
    x_T_c = content.x_T[None].to(model.device)
    x_T_s = style.x_T[None].to(model.device)
    x_T_cs = adain(x_T_c.double(), x_T_s.double()).to(x_T_c.dtype) if options.adain else x_T_c
    size = model.image_size(content.latents)
    cond = model.encode([options.prompt] * NUM_BRANCHES, size)
    uncond = model.encode_negative([""] * NUM_BRANCHES, size) if guidance > 1 else None
    # content and style replay their recorded latents; the output takes the content's corrections
    known = KnownRows({CONTENT: content.latents.to(model.device), STYLE: style.latents.to(model.device)},
                      {OUTPUT: CONTENT} if options.output_corrections == "content" else {})
    return StylePlan(schedule, torch.cat([x_T_c, x_T_s, x_T_cs]), Conditioning(cond, uncond), guidance, known)


def style_transfer(model, content: Trajectory, style: Trajectory, options: StyleOptions = StyleOptions(),
                   progress: bool = True) -> StyleResult:
    """Sample the content in the style of ``style`` (StyleID through the one DDIM sampler).

    Args:
        model: an :class:`~ddim_edit.model.EditModel`.
        content, style: the two inverted images (same timesteps and latent size).
        options: γ, T, layers, injection window, AdaIN, prompt and guidance.
        progress: progress bar on stderr.

    Returns:
        a :class:`StyleResult` with the three branches' z_0 (content and style are their replays).

    Raises:
        TrajectoryError: when the trajectories do not fit the model or each other.
        StyleOptionError: for a layer name that is no decoder self-attention layer.
    """
    check_style_options(options)
    plan = style_plan(model, content, style, options)
    layers = resolve_layers(model, options.layers)
    structure = resolve_structure_layers(model, options.structure_layers, layers)
    switch = InjectionSwitch()
    hook = InjectionSchedule(switch, options.injection_start, options.injection_end)
    before = model.unet_evaluations
    with torch.no_grad(), model.installed_processors(style_processors(model, layers, switch, options, structure)):
        latents = sample(model, plan.schedule, plan.x_T, plan.conditioning, plan.guidance_scale,
                         hooks=(plan.known, hook), progress=progress, desc="style transfer")
    settings = {"gamma": options.gamma, "temperature": options.temperature, "adain": options.adain,
                "inject_key_value": options.inject_key_value, "injection_window": [options.injection_start,
                                                                                    options.injection_end],
                "output_corrections": options.output_corrections, "guidance": plan.guidance_scale,
                "prompt": options.prompt,
                "steps": plan.schedule.num_steps}
    return StyleResult(latents, layers, hook.active_steps, model.unet_evaluations - before, settings, structure)


# ----------------------------------------------------------------------------------- images
@dataclass
class StyleOutcome:
    """What :func:`style_images` made: decoded images, the trajectories and the costs.

    Attributes:
        output: uint8 [H, W, 3] stylised image.
        content_reconstruction, style_reconstruction: the two replayed branches, decoded.
        content_source, style_source: the input pixels at the working size (None: a trajectory
            file whose source image is gone).
        content, style: the trajectories used (inverted now or loaded).
        result: the :class:`StyleResult`.
        inversion_evaluations: UNet batch items spent inverting images given as pixels.
    """

    output: np.ndarray
    content_reconstruction: np.ndarray
    style_reconstruction: np.ndarray
    content_source: np.ndarray | None
    style_source: np.ndarray | None
    content: Trajectory
    style: Trajectory
    result: StyleResult
    inversion_evaluations: int


def working_size(model, content: np.ndarray | Trajectory) -> tuple[int, int]:
    """(width, height) of the pair: the content trajectory's size, or the content image fitted to the model."""
    from ..images import fit_size

    if isinstance(content, Trajectory):
        _, h, w = content.latents.shape[1:]
        return w * model.vae_scale_factor, h * model.vae_scale_factor
    height, width = content.shape[:2]
    return fit_size(width, height, model.native_size, model.size_multiple)


def _prepare_pixels(pixels: np.ndarray, size: tuple[int, int], source: dict | None, label: str):
    from ..images import resize_rgb
    from ..workflow import PreparedImage

    height, width = pixels.shape[:2]
    info = dict(source or {"path": None, "sha256": None, "label": label})
    info.update(original_size=[width, height], size=list(size))
    return PreparedImage(resize_rgb(pixels, size), (width, height), info)


def style_images(model, content: np.ndarray | Trajectory, style: np.ndarray | Trajectory, schedule=None,
                 prompt: str = "", style_prompt: str | None = None, inversion=None,
                 options: StyleOptions = StyleOptions(), sources: tuple[dict | None, dict | None] = (None, None),
                 progress: bool = True) -> StyleOutcome:
    """Style transfer from images or trajectories: invert what is given as pixels, then :func:`style_transfer`.

    The CLI and the benchmark both call this.

    Args:
        model: an :class:`~ddim_edit.model.EditModel`.
        content, style: uint8 RGB [H, W, 3] images, or trajectories (e.g. ``Trajectory.load``).
            The content image is fitted to the model's size (aspect kept, sides a multiple the VAE
            and UNet accept); the style image is resized to the content's working size.
        schedule: the schedule to invert images with; when a trajectory is given, its timesteps are
            used instead (both sides must share them).
        prompt: the caption the content image is inverted with ("" as in StyleID).
        style_prompt: the caption the style image is inverted with (None: ``prompt``).
        inversion: :class:`~ddim_edit.inversion.InversionOptions` for images (default: exact,
            guidance 1, since StyleID samples without text guidance).
        options: the edit's :class:`StyleOptions`.
        sources: metadata (path, sha256) recorded in trajectories inverted from files.
        progress: progress bars on stderr.
    """
    from ..inversion import InversionOptions
    from ..replay import trajectory_schedule
    from ..workflow import decode, invert_image, source_image_for

    check_style_options(options)
    inversion = inversion or InversionOptions(method="exact", guidance_scale=1.0, record_corrections=False)
    given = [side for side in (content, style) if isinstance(side, Trajectory)]
    if given:
        schedule = trajectory_schedule(model, given[0])
    elif schedule is None:
        raise ValueError("a schedule is needed to invert images")
    size = working_size(model, content)
    before = model.unet_evaluations
    prompts = (prompt, prompt if style_prompt is None else style_prompt)
    trajectories, pixels = [], []
    for side, side_prompt, source, label in zip((content, style), prompts, sources, ("content", "style")):
        if isinstance(side, Trajectory):
            trajectories.append(side)
            pixels.append(source_image_for(side, size))
            continue
        prepared = _prepare_pixels(side, size, source, label)
        trajectories.append(invert_image(model, prepared, side_prompt, schedule, inversion, progress=progress))
        pixels.append(prepared.pixels)
    inversion_evaluations = model.unet_evaluations - before
    result = style_transfer(model, trajectories[0], trajectories[1], options, progress=progress)
    decoded = [decode(model, result.latents[i:i + 1]) for i in (OUTPUT, CONTENT, STYLE)]
    return StyleOutcome(decoded[0], decoded[1], decoded[2], pixels[0], pixels[1], trajectories[0], trajectories[1],
                        result, inversion_evaluations)

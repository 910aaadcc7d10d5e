"""Deterministic (η = 0) DDIM inversion of a latent z_0 into a :class:`Trajectory`.

Methods:

- ``ddim``: plain inversion. Step s → t uses ε_θ evaluated at (z_s, t), the approximation
  ε_θ(z_t, t) ≈ ε_θ(z_s, t); its step pairs are exactly the sampler's, reversed.
- ``fixed-point``: each step solves z_t = inverse_step(z_s, ε_θ(z_t, t)) by fixed-point iteration
  (plain DDIM is its first iterate) until the relative change is below a tolerance.
- ``negative-prompt``: plain inversion; replays use the source prompt as the negative prompt, so
  guided sampling follows the conditional trajectory (Miyake et al., NPI).
- ``null-text``: plain inversion, then per-step optimisation of the unconditional embedding so that
  guided sampling lands on the inverted latents (Mokady et al., Null-text Inversion).
- ``exact``: plain inversion, then the per-step difference between the inverted latents and one
  guided sampler step from them is recorded, so replays add it back (Ju et al., PnP "Direct
  Inversion"): reconstruction is exact at the recorded guidance.

v-prediction (SD 2.x 768-v) and other prediction types: step s → t evaluates the UNet at (z_s, t)
and turns its output into ε with ᾱ_t, the level of the timestep the model was told: exactly the
sampler's ε function at t, evaluated at z_s instead of z_t, so the only approximation is plain
DDIM's ε(z_t, t) ≈ ε(z_s, t). diffusers' ``DDIMInverseScheduler`` converts with ᾱ_s, the level of
the latent it was given; for ε models the two agree to float precision, for v models they differ
(by ~1e-2 per step on a tiny model) and the ᾱ_t conversion reconstructs closer to z_0
(tests/test_inversion.py). Fixed-point, null-text and exact inversion use the same conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import __version__
from .errors import DdimEditError, PromptError
from .replay import record_corrections
from .sampler import Conditioning, SamplerHook, StepInfo, inverse_update, sample
from .schedule import Schedule, work_dtype
from .trajectory import FORMAT_VERSION, METHODS, Trajectory



def require_caption(prompt: str | None, field: str = "prompt") -> str:
    """The caption an image is inverted with, stripped ("" inverts without one); a one-line
    :class:`PromptError` naming ``field`` when it is missing (None)."""
    if prompt is None:
        raise PromptError('the {field} is missing: give the caption of the image, or "" to invert without one',
                          field=field)
    return prompt.strip()


GUIDED_METHODS = ("negative-prompt", "null-text")
"""Methods that work on classifier-free guidance's unconditional branch."""


@dataclass(frozen=True)
class InversionOptions:
    """Settings of :func:`invert` beyond the prompt and schedule.

    Attributes:
        method: one of :data:`METHODS`.
        guidance_scale: the guidance that replays and edits use (and that ``exact`` corrections and
            ``null-text`` embeddings are fitted for).
        inversion_guidance: guidance while inverting; None means 1 (conditional only), except for
            ``fixed-point``, which then inverts at ``guidance_scale`` so that its solution is the
            inverse of the guided sampler that replays it.
        negative_prompt: the negative prompt for guided replay (not used by ``negative-prompt``).
        fixed_point_iterations: the most iterations per step for ``fixed-point``.
        fixed_point_tolerance: stop when ‖Δz_t‖ / ‖z_t‖ falls below this.
        null_text_steps: the most Adam steps per timestep for ``null-text``.
        null_text_lr: Adam's learning rate at the first timestep (decays linearly as in the paper).
        record_corrections: ``exact`` only: run the record pass (2N guided evaluations) so that a
            replay at ``guidance_scale`` adds the corrections back. Edits that read the recorded
            latents compute the corrections they need as they go, so an image inverted only to be
            edited can skip it; the trajectory then replays exactly only through those edits.
    """

    method: str = "ddim"
    guidance_scale: float = 7.5
    inversion_guidance: float | None = None
    negative_prompt: str = ""
    fixed_point_iterations: int = 10
    fixed_point_tolerance: float = 1e-5
    null_text_steps: int = 10
    null_text_lr: float = 1e-2
    record_corrections: bool = True

    def effective_inversion_guidance(self, embedded: bool = False) -> float:
        """The guidance used while inverting (see ``inversion_guidance``); a model whose guidance is
        ``embedded`` (an input, FLUX) inverts at ``guidance_scale``, the replay's own model."""
        if self.inversion_guidance is not None:
            return float(self.inversion_guidance)
        return float(self.guidance_scale) if self.method == "fixed-point" or embedded else 1.0


def check_inversion_options(options: InversionOptions) -> None:
    """Raise a :class:`DdimEditError` (with the offending field) for settings no method can use."""
    if options.method not in METHODS:
        raise PromptError(f"unknown inversion {{field}} {options.method!r}; choose one of {', '.join(METHODS)}",
                          field="method", value=options.method)
    for name in ("guidance_scale", "inversion_guidance", "fixed_point_tolerance", "null_text_lr"):
        value = getattr(options, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise DdimEditError(f"{{field}} must be a finite number, got {value!r}", field=name, value=value)
    for name in ("fixed_point_iterations", "null_text_steps"):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DdimEditError(f"{{field}} must be a positive integer, got {value!r}; e.g. {{field}} 10",
                                field=name, value=value)
    if options.fixed_point_tolerance < 0:
        raise DdimEditError(f"{{field}} must be ≥ 0, got {options.fixed_point_tolerance}; e.g. {{field}} 1e-5",
                            field="fixed_point_tolerance", value=options.fixed_point_tolerance)
    if options.null_text_lr <= 0:
        raise DdimEditError(f"{{field}} must be > 0, got {options.null_text_lr}", field="null_text_lr")


def fixed_point_step(model, schedule: Schedule, k: int, z_s: torch.Tensor, cond, uncond, guidance_scale: float,
                     iterations: int, tolerance: float, damping: float = 1.0) -> tuple[torch.Tensor, float, int]:
    """Solve z_t = f(z_t) = inverse_step(z_s, ε(z_t, t_k)) by the damped iteration z ← z + β (f(z) − z).

    Starts from plain DDIM's z_t = f(z_s). Returns the iterate with the smallest relative residual
    ‖f(z) − z‖ / ‖f(z)‖ seen (the last one while the iteration contracts; the closest one when it
    oscillates or diverges, as guided iterations can at small t), that residual and the number of
    UNet evaluations spent.
    """
    def f(z: torch.Tensor) -> torch.Tensor:
        return inverse_update(model, schedule, k, z_s, z, cond, uncond, guidance_scale)

    z = f(z_s)
    best, best_residual, used = z, math.inf, 1
    residual = math.inf
    for _ in range(iterations - 1):
        f_z = f(z)
        used += 1
        residual = float((f_z - z).norm() / f_z.norm().clamp_min(1e-12))
        if residual < best_residual:
            best, best_residual = z, residual
        z = z + damping * (f_z - z)
        if residual < tolerance:
            break
    # still contracting at the end: the last update is closer still than the best evaluated iterate
    return (z, residual, used) if residual <= best_residual else (best, best_residual, used)


def invert_latents(
    model,
    schedule: Schedule,
    z0: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    iterations: int = 1,
    tolerance: float = 0.0,
    progress: bool = True,
    damping: float = 0.3,
    residuals: list[float] | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Invert z_0 ([B, C, h, w]) along the schedule.

    With ``iterations`` > 1 each step solves z_t = inverse_step(ε(z_t)) by fixed-point iteration
    (:func:`fixed_point_step`), stopping once the relative residual is below ``tolerance``. A step
    that does not get there undamped is solved again with the damped update (β = ``damping``),
    which converges where the plain iteration oscillates; the iterate with the smaller residual is
    kept.

    Args:
        residuals: when a list is given, the final residual of each step (sampling order) is put in it.

    Returns the latents in sampling order ([N + 1, B, C, h, w], index 0 = x_T) and the number of
    UNet evaluations used at each step (1 everywhere for plain DDIM).
    """
    n = schedule.num_steps
    solver = FixedPointSolve(iterations, tolerance, damping, [1] * n, [0.0] * n)
    recorder = StateRecorder(n, z0.to(work_dtype(z0.device)))
    sample(model, schedule, z0, Conditioning(cond, uncond), guidance_scale, hooks=[recorder], progress=progress,
           desc="inverting", reverse=True, solve=solver)
    if residuals is not None:
        residuals[:] = solver.residuals
    return torch.stack(recorder.states), solver.used


@dataclass
class FixedPointSolve:
    """The reverse walk's step for fixed-point inversion (:func:`fixed_point_step`, then again damped by
    ``damping`` when the plain iteration stops above ``tolerance``); keeps each step's evaluations and
    final residual. With one iteration it is plain inversion."""

    iterations: int
    tolerance: float
    damping: float
    used: list[int]
    residuals: list[float]

    def __call__(self, model, schedule: Schedule, k: int, z_s: torch.Tensor, cond, uncond,
                 guidance_scale: float) -> torch.Tensor:
        z_t, residual, self.used[k] = fixed_point_step(model, schedule, k, z_s, cond, uncond, guidance_scale,
                                                       self.iterations, self.tolerance)
        if self.iterations > 1 and residual > self.tolerance and self.damping < 1:
            damped, damped_residual, extra = fixed_point_step(model, schedule, k, z_s, cond, uncond, guidance_scale,
                                                              self.iterations, self.tolerance, self.damping)
            self.used[k] += extra
            if damped_residual < residual:
                z_t, residual = damped, damped_residual
        self.residuals[k] = residual
        return z_t


class StateRecorder(SamplerHook):
    """Keeps every position a reverse walk reaches: ``states[i]`` is the latents at position i."""

    def __init__(self, num_steps: int, final: torch.Tensor):
        self.states: list[torch.Tensor | None] = [None] * num_steps + [final]

    def after_step(self, step: StepInfo, latents: torch.Tensor) -> torch.Tensor:
        self.states[step.index] = latents
        return latents


class NullTextFit(SamplerHook):
    """Null-text inversion's fit as a sampler hook: before step i it fits the null embedding so the
    guided step from the running latent hits the recorded z_{i+1}, and puts it in ``per_step[i]``,
    which the sampler's conditioning reads for that step (see :func:`optimise_null_text`)."""

    def __init__(self, model, schedule: Schedule, latents: torch.Tensor, cond, null, per_step: torch.Tensor,
                 guidance_scale: float, inner_steps: int, lr: float):
        self.model, self.schedule, self.latents, self.cond, self.base = model, schedule, latents, cond, null
        self.per_step, self.guidance_scale, self.inner_steps, self.lr = per_step, guidance_scale, inner_steps, lr
        self.null = null.hidden.detach().clone().float()

    def before_step(self, step: StepInfo, current: torch.Tensor) -> None:
        model, i, t = self.model, step.index, step.timestep
        with torch.no_grad():
            out_cond = model.denoise(current, t, self.cond, None, 1.0).to(current.dtype)
        null = self.null.detach().requires_grad_(True)
        fraction = step.fraction  # the paper's i / 50 at N = 50
        optimiser = torch.optim.Adam([null], lr=self.lr * (1.0 - fraction / 2.0))
        target = self.latents[i + 1]
        with torch.enable_grad():
            for _ in range(self.inner_steps):
                out_uncond = model.denoise(current, t, self.base.with_hidden(null.to(model.dtype)), None, 1.0
                                           ).to(current.dtype)
                guided = out_uncond + self.guidance_scale * (out_cond - out_uncond)
                loss = F.mse_loss(self.schedule.step(guided, current, i), target)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                if loss.item() < 1e-5 + 1e-3 * fraction:
                    break
        self.null = null.detach()
        self.per_step[i] = self.null


def optimise_null_text(
    model,
    schedule: Schedule,
    latents: torch.Tensor,
    cond,
    null,
    guidance_scale: float,
    inner_steps: int = 10,
    lr: float = 1e-2,
    progress: bool = True,
) -> torch.Tensor:
    """Null-text inversion: per step, fit the null embedding so the guided step hits z_{i+1}.

    ``cond`` and ``null`` are :class:`~ddim_edit.conditioning.PromptEmbeds`; only the null token
    embeddings are fitted (SDXL's pooled embedding and size conditioning stay the negative prompt's).
    Returns [N, B, L, D] embeddings. The running latent follows the guided sampler with the fitted
    embeddings, as in the paper: it is the sampler with :class:`NullTextFit` before each step. The
    paper's schedule is written for 50 steps (learning rate lr·(1 − i/100), early stop below
    1e-5 + 2e-5·i); here it is a function of the fraction f = i/N of the steps done, equal to the
    paper's at N = 50 and valid for any N: learning rate lr·(1 − f/2), early stop below 1e-5 + 1e-3·f.
    """
    per_step = torch.zeros(schedule.num_steps, *null.hidden.shape, dtype=torch.float32, device=null.hidden.device)
    fit = NullTextFit(model, schedule, latents, cond, null, per_step, guidance_scale, inner_steps, lr)
    with torch.no_grad():
        sample(model, schedule, latents[0], Conditioning(cond, null, per_step), guidance_scale, hooks=[fit],
               progress=progress, desc="null-text")
    return per_step


def invert(
    model,
    schedule: Schedule,
    z0: torch.Tensor,
    prompt: str,
    options: InversionOptions = InversionOptions(),
    source: dict | None = None,
    progress: bool = True,
) -> Trajectory:
    """Invert one image's latent z_0 ([C, h, w] or [1, C, h, w]) into a :class:`Trajectory`.

    Args:
        model: an :class:`~ddim_edit.model.EditModel`.
        schedule: timesteps and ᾱ (see :meth:`Schedule.from_scheduler_config`).
        z0: the VAE latent of the image.
        prompt: the source prompt (may be empty for unconditional inversion).
        options: method and its settings.
        source: extra metadata about the source image (path, sha256, size).
        progress: progress bars on stderr.
    """
    check_inversion_options(options)
    require_caption(prompt)
    if not model.classifier_free and options.method in GUIDED_METHODS:
        raise PromptError(f"{options.method} inversion fits classifier-free guidance, which this {model.family.upper()} "
                          "model does not use (its guidance is a model input, or it is guidance-distilled); use "
                          "--method exact, fixed-point or ddim", field="method", value=options.method)
    inversion_guidance = options.effective_inversion_guidance(model.EMBEDDED_GUIDANCE)
    z0 = z0.reshape(1, *z0.shape[-3:]).to(model.device, torch.float32)
    size = model.image_size(z0)
    cond = model.encode([prompt], size)
    negative = model.encode_negative([options.negative_prompt], size)
    start_evaluations = model.unet_evaluations
    iterations = options.fixed_point_iterations if options.method == "fixed-point" else 1
    with torch.no_grad():
        residuals: list[float] = []
        latents, used = invert_latents(model, schedule, z0, cond, negative, inversion_guidance,
                                       iterations, options.fixed_point_tolerance, progress, residuals=residuals)
        corrections = null_embeddings = None
        if options.method == "exact" and options.record_corrections:
            corrections = record_corrections(model, schedule, latents, cond, negative, options.guidance_scale)[:, 0]
    if options.method == "null-text":
        null_embeddings = optimise_null_text(model, schedule, latents, cond, negative, options.guidance_scale,
                                             options.null_text_steps, options.null_text_lr, progress)[:, 0]
    metadata = {
        "format_version": FORMAT_VERSION,
        "ddim_edit_version": __version__,
        "model": model.name,
        "model_config": model.config_reference,
        "model_family": model.family,
        "model_fingerprint": model.fingerprint(),
        "model_signature": model.signature(),
        "loras": list(model.loras),
        "schedule": schedule.to_json(),
        "prompt": prompt,
        "negative_prompt": prompt if options.method == "negative-prompt" else options.negative_prompt,
        "method": options.method,
        "guidance_scale": options.guidance_scale,
        "inversion_guidance": inversion_guidance,
        "fixed_point_iterations": used if options.method == "fixed-point" else None,
        # steps whose fixed point was not reached within the tolerance (the closest iterate was kept)
        "fixed_point_unconverged": ([k for k, r in enumerate(residuals) if r > options.fixed_point_tolerance]
                                    if options.method == "fixed-point" else None),
        "unet_evaluations": model.unet_evaluations - start_evaluations,
        "latent_shape": list(z0.shape[1:]),
        "dtype": str(model.dtype).replace("torch.", ""),
        "source": source or {},
    }
    return Trajectory(schedule.timesteps, latents[:, 0].cpu(), metadata,
                      None if corrections is None else corrections.cpu(),
                      None if null_embeddings is None else null_embeddings.cpu())


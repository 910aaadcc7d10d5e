"""Replaying a trajectory through the sampler: the source branch every edit shares.

How the source branch is conditioned depends on the inversion method (negative prompt = source
prompt for ``negative-prompt``, per-step null embeddings for ``null-text``, recorded corrections for
``exact``). :func:`replay_plan` gathers that once; edits stack extra branches on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import TrajectoryError
from .sampler import Conditioning, SamplerHook, StepInfo, sample
from .schedule import Schedule
from .trajectory import Trajectory, check_compatible, check_schedule


@dataclass
class ReplayPlan:
    """What the sampler needs to replay a trajectory for ``B`` branches.

    Attributes:
        schedule: the trajectory's schedule.
        x_T: [B, C, h, w] starting latents (the same x_T for every branch).
        conditioning: embeddings per branch.
        guidance_scale: the guidance the replay uses.
        corrections: [N, 1, C, h, w] (exact) or None; the same record applies to every branch.
    """

    schedule: Schedule
    x_T: torch.Tensor  # noqa: N815
    conditioning: Conditioning
    guidance_scale: float
    corrections: torch.Tensor | None


class KnownRows(SamplerHook):
    """The two-branch replay every edit runs: known rows follow their recorded latents, edited rows
    take a known row's correction.

    After each step, each edited row gets its reference row's Direct-Inversion correction
    c_i = z_{i+1} − step(z_i): the reference row's step used the guided output at this prompt and
    guidance, so where the edit is a no-op the edited row follows the recorded path exactly. Then every
    known row is put back on its recorded latent z_{i+1}. :meth:`correction` is the policy an edit may
    refine (a recorded correction, a mask).

    Args:
        known: row → its recorded latents [N + 1, C, h, w] in sampling order.
        corrected: edited row → the known row whose correction it takes.
    """

    def __init__(self, known: dict[int, torch.Tensor], corrected: dict[int, int]):
        self.known = known
        self.corrected = corrected

    def recorded(self, step: StepInfo, row: int, like: torch.Tensor) -> torch.Tensor:
        """Row ``row``'s recorded latent after ``step``."""
        return self.known[row][step.index + 1].to(like)

    def correction(self, step: StepInfo, latents: torch.Tensor, row: int, reference: int) -> torch.Tensor:
        """What edited ``row`` adds after ``step``: the reference row's z_{i+1} − step(z_i)."""
        return self.recorded(step, reference, latents) - latents[reference]

    def after_step(self, step: StepInfo, latents: torch.Tensor) -> torch.Tensor:
        rows = list(latents)
        for row, reference in self.corrected.items():
            rows[row] = rows[row] + self.correction(step, latents, row, reference)
        for row in self.known:
            rows[row] = self.recorded(step, row, latents)
        return torch.stack(rows)


class CorrectionRecorder(KnownRows):
    """Direct Inversion's record pass as a replay: every row follows its recorded latents, and the
    correction each step would hand an edited row, c_i = z_{i+1} − step(z_i), is kept."""

    def __init__(self, latents: torch.Tensor):
        super().__init__({row: latents[:, row] for row in range(latents.shape[1])}, {})
        self.corrections: list[torch.Tensor] = []

    def after_step(self, step: StepInfo, latents: torch.Tensor) -> torch.Tensor:
        self.corrections.append(torch.stack([self.correction(step, latents, row, row) for row in self.known]))
        return super().after_step(step, latents)


def record_corrections(model, schedule: Schedule, latents: torch.Tensor, cond, uncond, guidance_scale: float) -> torch.Tensor:
    """Direct-Inversion record: c_i = z_{i+1} − step(z_i) with the guided model along the recorded
    latents ([N + 1, B, C, h, w]), [N, B, C, h, w]: the sampler run with every row on its record."""
    recorder = CorrectionRecorder(latents)
    sample(model, schedule, latents[0], Conditioning(cond, uncond), guidance_scale, hooks=[recorder], progress=False)
    return torch.stack(recorder.corrections)


def trajectory_schedule(model, traj: Trajectory) -> Schedule:
    """The schedule the trajectory was made with, checked against the model."""
    check_compatible(traj, model)  # the model first: another family's trajectory has another stepper
    schedule = model.recorded_schedule(traj.metadata["schedule"], traj.timesteps)
    check_schedule(traj, schedule)
    return schedule


def recorded_guidance(traj: Trajectory) -> float:
    """The guidance the trajectory was made for (``exact`` corrections / ``null-text`` embeddings fit it)."""
    return float(traj.metadata["guidance_scale"])


def guidance_is_recorded(traj: Trajectory, guidance_scale: float) -> bool:
    """Whether ``guidance_scale`` is the one the trajectory's record was fitted for."""
    return abs(float(guidance_scale) - recorded_guidance(traj)) <= 1e-9


def replay_plan(model, traj: Trajectory, prompts: list[str] | None = None, guidance_scale: float | None = None,
                with_corrections: bool = True) -> ReplayPlan:
    """Conditioning and corrections to sample ``prompts`` (default: the source prompt) from x_T.

    Any guidance may be asked; an ``exact`` / ``null-text`` record only reproduces the inversion at
    the recorded one (:func:`reconstruct` insists on it; edits whose source branch reads the
    recorded latents do not need it). An ``exact`` trajectory inverted without its record pass gets
    its corrections recorded now at the plan's guidance (2N evaluations), and so does one asked for
    another guidance than the recorded one, unless ``with_corrections`` is False.

    Raises:
        TrajectoryError: when the trajectory does not fit the model.
    """
    schedule = trajectory_schedule(model, traj)
    prompts = prompts or [traj.metadata["prompt"]]
    guidance = recorded_guidance(traj) if guidance_scale is None else float(guidance_scale)
    batch = len(prompts)
    size = model.image_size(traj.latents)
    cond = model.encode(prompts, size)
    negative = model.encode_negative([traj.metadata["negative_prompt"]] * batch, size)
    per_step = None
    if traj.null_embeddings is not None:
        per_step = traj.null_embeddings.to(model.device, model.dtype)[:, None].expand(-1, batch, -1, -1)
    corrections = None
    if traj.method == "exact" and with_corrections:
        if traj.corrections is not None and guidance_is_recorded(traj, guidance):
            corrections = traj.corrections[:, None].to(model.device)
        else:  # inverted without the record pass, or asked at another guidance: record now
            with torch.no_grad():
                corrections = record_corrections(model, schedule, traj.latents[:, None].to(model.device),
                                                 model.encode([traj.metadata["prompt"]], size), negative.rows(0),
                                                 guidance)
    x_T = traj.x_T[None].to(model.device).expand(batch, -1, -1, -1)
    return ReplayPlan(schedule, x_T, Conditioning(cond, negative, per_step), guidance, corrections)


def reconstruct(model, traj: Trajectory, guidance_scale: float | None = None,
                hooks: tuple[SamplerHook, ...] = (), progress: bool = True, eta: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample the source prompt from x_T with the trajectory's method: z_0' [1, C, h, w].

    ``eta > 0`` adds DDIM's stochastic noise (seeded by ``generator``); the replay is then no
    longer exact, whatever the method.
    """
    if traj.method in ("exact", "null-text") and guidance_scale is not None and not guidance_is_recorded(traj, guidance_scale):
        recorded = recorded_guidance(traj)
        raise TrajectoryError(
            f"this {traj.method} trajectory reconstructs exactly at guidance {recorded}, not {guidance_scale}; "
            f"replay it at {recorded} or invert again for {guidance_scale}")
    plan = replay_plan(model, traj, guidance_scale=guidance_scale)
    with torch.no_grad():
        return sample(model, plan.schedule, plan.x_T, plan.conditioning, plan.guidance_scale, eta=eta,
                      generator=generator, corrections=plan.corrections, hooks=hooks, progress=progress,
                      desc="reconstructing")

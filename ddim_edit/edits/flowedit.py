"""FlowEdit: inversion-free editing by integrating the difference of two velocities (Kulikov et al., 2024).

The edited image is the end of an ODE that starts at the source image X^src (σ = 0 … σ_{n_max}):
at each step a fresh noise n couples a noisy source Z^src_σ = (1 − σ) X^src + σ n with a noisy target
Z^tar_σ = Z^FE + Z^src_σ − X^src, and Z^FE moves by (σ_next − σ) (v(Z^tar, c_tar) − v(Z^src, c_src)),
averaged over ``n_avg`` noises. Nothing is inverted and no attention is touched; with the target
prompt equal to the source's the two velocities cancel and the source latents come back unchanged.
The last ``n_min`` steps (0 by default) sample the target from the coupled point instead.

It runs on every stepper: the η = 0 DDIM ODE, written in X = x/√ᾱ and σ = √(1 − ᾱ)/√ᾱ, is the flow
dX/dσ = ε, so the algorithm is the same there, in those coordinates. The code says it once, in the
steppers' own terms: a state is ``schedule.noised`` of the source plus ``schedule.state_scale(i)``
times Z^FE − X^src, and the update is the difference of the two branches' ``schedule.step``.

Model evaluations per step: 2 branches × ``n_avg`` × (2 with classifier-free guidance, else 1):
132 for 50 steps with ``n_max`` 33 on a classifier-free model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..conditioning import Conditioning
from ..errors import PromptError
from ..options import option
from ..sampler import sample
from ..schedule import work_dtype

FLOWEDIT = "flowedit"
"""The swap method that edits without inverting (``--method flowedit``)."""
PAPER_STEPS, PAPER_N_MAX = 50, 33
"""The paper's SD3 setting: 50 steps, the edit from step 50 − 33 on."""
GUIDANCE = {"classifier-free": (3.5, 13.5), "embedded": (1.5, 5.5)}
"""(source, target) guidance by kind of guidance: the paper's SD3 values, and its FLUX.1 ones for
models whose guidance is a model input."""


@dataclass(frozen=True)
class FlowEditOptions:
    """Settings of :func:`flowedit` (the step count is the job's ``--steps``).

    Attributes:
        n_max: how many of the last steps edit (default: 33 of 50, the paper's share, scaled to the
            step count); the first steps are skipped.
        n_min: how many of those last steps sample the target plainly from the coupled point instead.
        n_avg: noises averaged per step.
        source_guidance, target_guidance: the two branches' guidance (default: the paper's, 3.5 and
            13.5, or FLUX.1's embedded 1.5 and 5.5).
    """

    n_max: int | None = option(None, kind=int, minimum=1, example="33", group="flowedit",
                               help="FlowEdit: edit over this many of the last steps (default: 33 of 50, scaled).")
    n_min: int = option(0, minimum=0, example="0", group="flowedit",
                        help="FlowEdit: of those, sample the target plainly over this many last steps.")
    n_avg: int = option(1, minimum=1, example="1", group="flowedit", help="FlowEdit: noises averaged per step.")
    source_guidance: float | None = option(None, kind=float, example="3.5", group="flowedit",
                                           help="FlowEdit: source branch guidance (default 3.5; FLUX.1 1.5).")
    target_guidance: float | None = option(None, kind=float, example="13.5", group="flowedit",
                                           help="FlowEdit: target branch guidance (default 13.5; FLUX.1 5.5).")

    def steps_edited(self, num_steps: int) -> tuple[int, int]:
        """(first, stop): the steps that edit, ``num_steps − n_max`` … ``num_steps − n_min − 1``."""
        n_max = self.n_max if self.n_max is not None else max(1, round(num_steps * PAPER_N_MAX / PAPER_STEPS))
        if n_max > num_steps:
            raise PromptError(f"{{field}} {n_max} is more than the {num_steps} steps; pass at most {num_steps}",
                              field="n_max")
        if self.n_min >= n_max:
            raise PromptError(f"{{field}} {self.n_min} must be below n_max ({n_max})", field="n_min")
        return num_steps - n_max, num_steps - self.n_min

    def guidance(self, model) -> tuple[float, float]:
        """(source, target) guidance for ``model``."""
        kind = "embedded" if model.EMBEDDED_GUIDANCE else "classifier-free"
        source, target = GUIDANCE[kind]
        return (source if self.source_guidance is None else self.source_guidance,
                target if self.target_guidance is None else self.target_guidance)


@dataclass
class FlowEditResult:
    """What :func:`flowedit` made: the edited latents [1, C, h, w], and the model evaluations it spent."""

    latents: torch.Tensor
    unet_evaluations: int


def flowedit(model, schedule, x_src: torch.Tensor, source: Conditioning, target: Conditioning,
             options: FlowEditOptions = FlowEditOptions(), generator: torch.Generator | None = None,
             progress: bool = True) -> FlowEditResult:
    """Edit the clean latents ``x_src`` [1, C, h, w] from the ``source`` conditioning to the ``target``'s.

    Args:
        model: an :class:`~ddim_edit.model.EditModel` (any family).
        schedule: the stepper (``model.make_schedule``); its final state is the clean image.
        source, target: each branch's conditioning (prompt row, and the negative row when guided).
        options: the step window, the noises per step and the two guidances.
        generator: the coupling noises' generator (CPU); None: torch's global one.
    """
    first, stop = options.steps_edited(schedule.num_steps)
    source_guidance, target_guidance = options.guidance(model)
    dtype = work_dtype(x_src.device)
    x_src = x_src.to(dtype)
    before = model.unet_evaluations

    def coupled(index: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Z^src, Z^tar) at position ``index`` under a fresh noise."""
        noise = torch.randn(x_src.shape, generator=generator, dtype=torch.float32).to(x_src.device, dtype)
        noisy_source = schedule.noised(x_src, noise, index)
        return noisy_source, noisy_source + schedule.state_scale(index) * (z - x_src)

    def branch_step(index: int, latents: torch.Tensor, branch: Conditioning, guidance: float) -> torch.Tensor:
        output = model.denoise(latents, schedule.timesteps[index], branch.cond, branch.uncond, guidance)
        return schedule.step(output.to(dtype), latents, index)

    z = x_src.clone()
    with torch.no_grad():
        for index in tqdm(range(first, stop), desc="FlowEdit", disable=not progress, leave=False):
            change = torch.zeros_like(z)
            for _ in range(options.n_avg):
                noisy_source, noisy_target = coupled(index, z)
                change += (branch_step(index, noisy_target, target, target_guidance)
                           - branch_step(index, noisy_source, source, source_guidance))
            z = x_src + change / (options.n_avg * schedule.state_scale(index + 1))
        if stop < schedule.num_steps:
            _, noisy_target = coupled(stop, z)
            z = sample(model, schedule, noisy_target, target, target_guidance, start_index=stop, progress=progress,
                       desc="FlowEdit (n_min)")
    return FlowEditResult(z, model.unet_evaluations - before)


def branch_conditioning(model, prompt: str, negative_prompt: str = "",
                        image_size: tuple[int, int] | None = None) -> Conditioning:
    """One branch's conditioning: the prompt's row and, on classifier-free models, the negative prompt's."""
    uncond = model.encode_negative([negative_prompt], image_size) if model.classifier_free else None
    return Conditioning(model.encode([prompt], image_size), uncond)

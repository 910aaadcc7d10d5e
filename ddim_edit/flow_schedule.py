"""The stepper of the rectified-flow ODE: flow-matching Euler in σ (SD3, FLUX).

Notation (rectified flow, Liu et al. 2022; Esser et al. 2024 for SD3; diffusers' names):

- ``sigmas``   σ_0 = 1 ≥ … > σ_N = 0, the noise level of each trajectory position;
- the state    x_σ = (1 − σ) x_0 + σ ε;
- the model's output is the velocity v = dx/dσ = ε − x_0 (``prediction_type`` ``flow``);
- the Euler step from position i to i + 1: x_{i+1} = x_i + (σ_{i+1} − σ_i) v(x_i, t_i), with
  t_i = σ_i · T the timestep the transformer is told (diffusers' ``FlowMatchEulerDiscreteScheduler``).

Written in x_0 and ε, the Euler step is the η = 0 DDIM step with √ᾱ → 1 − σ and √(1 − ᾱ) → σ:
x_{i+1} = (1 − σ_{i+1}) x̂_0 + σ_{i+1} ε̂, with x̂_0 = x_i − σ_i v and ε̂ = x_i + (1 − σ_i) v. So
:class:`FlowSchedule` answers the same questions as the DDIM :class:`~ddim_edit.schedule.Schedule`
(split, step, inverse step, step coefficients, re-noising, segments) and the sampler, the inversions
and inpainting run on either.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .errors import ScheduleError

FLOW_STEPPER = "flow-euler"


@dataclass(frozen=True)
class FlowSchedule:
    """Explicit descending σ and the timesteps the model is told, and the Euler stepper on them.

    Attributes:
        sigmas: σ_0 > σ_1 > … > σ_N (N + 1 values; σ_N is the final state's, 0 for a full sample).
        timesteps: t_0 … t_{N−1}, what the transformer is told at each step (σ_i · T as diffusers
            computes it, in float32).
        spacing: how the sigmas were made (informational).
    """

    sigmas: tuple[float, ...]
    timesteps: tuple[float, ...]
    spacing: str = "flow"
    prediction_type = "flow"

    def __post_init__(self) -> None:
        sigmas = [float(s) for s in self.sigmas]
        if len(sigmas) < 2 or len(self.timesteps) != len(sigmas) - 1:
            raise ScheduleError(f"a flow schedule needs N + 1 sigmas for N timesteps, got {len(sigmas)} sigmas and "
                                f"{len(self.timesteps)} timesteps")
        if not all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in sigmas) or any(
                a <= b for a, b in zip(sigmas, sigmas[1:])):
            raise ScheduleError(f"flow sigmas must fall strictly from ≤ 1 to ≥ 0, got {sigmas[:6]}…")
        object.__setattr__(self, "sigmas", tuple(sigmas))
        object.__setattr__(self, "timesteps", tuple(float(t) for t in self.timesteps))

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    # ------------------------------------------------------------------ the stepper of the flow ODE
    # The same methods as the DDIM Schedule; positions are trajectory states: 0 = x_T … N = final.
    def split(self, output: torch.Tensor, sample: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε̂, x̂_0) from the velocity ``output`` at the state ``sample`` of position ``index``."""
        sigma = self.sigmas[index]
        return sample + (1.0 - sigma) * output, sample - sigma * output

    def step(self, output: torch.Tensor, sample: torch.Tensor, index: int, eta: float = 0.0,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """Euler step ``index``: x_{i+1} = x_i + (σ_{i+1} − σ_i) v."""
        if eta > 0:
            raise ScheduleError("eta > 0 is DDIM's stochastic step; flow models sample deterministically: use eta 0",
                                field="eta", value=eta)
        return sample + (self.sigmas[index + 1] - self.sigmas[index]) * output

    def inverse_step(self, output: torch.Tensor, sample: torch.Tensor, index: int,
                     evaluated_at: torch.Tensor | None = None) -> torch.Tensor:
        """Step ``index`` backwards: x_i = x_{i+1} + (σ_i − σ_{i+1}) v, with the velocity ``output``
        (evaluated at x_{i+1} for plain inversion, at the current estimate of x_i for fixed-point; the
        velocity does not depend on where it is split, so ``evaluated_at`` is not needed)."""
        return sample + (self.sigmas[index] - self.sigmas[index + 1]) * output

    def coefficients(self, index: int) -> tuple[float, float]:
        """(A, B) of step ``index`` written as x_s = A·x_t + B·ε̂: A = (1 − σ_s)/(1 − σ_t),
        B = (σ_s − σ_t)/(1 − σ_t). Undefined at σ_t = 1, where x_t is ε and carries no x_0."""
        sigma_t, sigma_s = self.sigmas[index], self.sigmas[index + 1]
        if sigma_t >= 1.0:
            raise ScheduleError("the step from σ = 1 has no (A, B) form: x_t is pure noise there")
        return (1.0 - sigma_s) / (1.0 - sigma_t), (sigma_s - sigma_t) / (1.0 - sigma_t)

    def state_scale(self, index: int) -> float:
        """1: the flow's states are the ODE's own (DDIM's are √ᾱ times its ODE's; see ``Schedule.state_scale``)."""
        return 1.0

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        """The state at position ``index`` of ``x0`` under ``noise``: (1 − σ) x_0 + σ ε."""
        sigma = self.sigmas[index]
        return (1.0 - sigma) * x0 + sigma * noise

    def forward_noised(self, sample: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        """The forward process one position back (σ_k → σ_{k−1}): r x_k + √(σ_{k−1}² − r² σ_k²) ε with
        r = (1 − σ_{k−1})/(1 − σ_k), so that x_{k−1} has the marginal (1 − σ_{k−1}) x_0 + σ_{k−1} ε."""
        sigma_prev, sigma = self.sigmas[index - 1], self.sigmas[index]
        ratio = (1.0 - sigma_prev) / (1.0 - sigma)
        return ratio * sample + math.sqrt(max(sigma_prev**2 - (ratio * sigma) ** 2, 0.0)) * noise

    def segment(self, start: int, stop: int) -> "FlowSchedule":
        """Steps ``start … stop − 1`` as a schedule whose final state is position ``stop``."""
        return FlowSchedule(self.sigmas[start:stop + 1], self.timesteps[start:stop], self.spacing)

    def fingerprint(self) -> str:
        """A short hash of the stepper and its sigmas: equal iff the schedule maths is equal."""
        digest = hashlib.sha256(FLOW_STEPPER.encode())
        digest.update(np.asarray(self.sigmas, dtype=np.float64).tobytes())
        return digest.hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {"stepper": FLOW_STEPPER, "timesteps": list(self.timesteps), "sigmas": list(self.sigmas),
                "spacing": self.spacing, "prediction_type": self.prediction_type, "fingerprint": self.fingerprint()}

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> "FlowSchedule":
        """The schedule a trajectory recorded (:meth:`to_json`)."""
        return cls(tuple(record["sigmas"]), tuple(record["timesteps"]), str(record.get("spacing", "flow")))

    @classmethod
    def from_scheduler_config(cls, config: Mapping[str, Any], num_steps: int, sigmas: Sequence[float] | None = None,
                              mu: float | None = None) -> "FlowSchedule":
        """The schedule diffusers' ``FlowMatchEulerDiscreteScheduler`` sets for ``num_steps`` steps.

        Args:
            config: the model's scheduler config.
            num_steps: the number of steps.
            sigmas: the unshifted σ a pipeline passes (FLUX: ``linspace(1, 1/N, N)``); None: the
                scheduler's own (SD3).
            mu: the resolution-dependent shift, for configs with ``use_dynamic_shifting``.
        """
        from diffusers import FlowMatchEulerDiscreteScheduler

        if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps <= 0:
            raise ScheduleError(f"{{field}} must be a positive integer, got {num_steps!r}; e.g. {{field}}=28",
                                field="num_steps", value=num_steps)
        known = {k: v for k, v in dict(config).items() if not k.startswith("_")}
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(known)
        kwargs: dict[str, Any] = {"mu": mu} if scheduler.config.use_dynamic_shifting else {}
        if sigmas is not None:
            scheduler.set_timesteps(sigmas=list(sigmas), **kwargs)
        else:
            scheduler.set_timesteps(int(num_steps), **kwargs)
        return cls(tuple(scheduler.sigmas.tolist()), tuple(scheduler.timesteps.tolist()))
